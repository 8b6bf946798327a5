"""Plans: active subscriptions per plan, and every subscription by status."""

import streamlit as st

from dashboard import auth, charts, data, tables, ui
from finance_core.views import statuses

auth.current_viewer()
st.title("Plans")

summary = data.subscription_summary()
breakdown = statuses.with_pause_reasons(data.status_breakdown(), data.paused_by_reason())
st.caption(
    f"As of {ui.absolute_time(summary.as_of)} · active means "
    f"{', '.join(data.settings().active_subscription_statuses)}"
)

st.subheader("Active subscriptions per plan")
if summary.plan_distribution:
    chart, table = st.columns([3, 2])
    chart.plotly_chart(charts.plan_distribution(summary.plan_distribution), width="stretch")
    table.dataframe(**tables.plan_table(summary.plan_distribution))
    table.metric("Active subscriptions", f"{summary.active_subscriptions:,}")
else:
    st.info("No active subscriptions yet.")

st.subheader("All subscriptions by status")
if breakdown:
    chart, table = st.columns([3, 2])
    chart.plotly_chart(charts.status_breakdown(breakdown), width="stretch")
    table.dataframe(**tables.status_table(breakdown))
else:
    st.info("No subscriptions in the store yet.")

st.link_button(
    "Revenue in the Stripe Dashboard", summary.stripe_dashboard_url, icon=":material/open_in_new:"
)
