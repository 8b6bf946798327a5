"""Overview: the four numbers, the plan distribution and the way to Stripe."""

import streamlit as st

from dashboard import auth, charts, data, ui

auth.current_viewer()
st.title("Overview")


@st.fragment(run_every=ui.REFRESH_SECONDS)
def headline() -> None:
    """The API's numbers, re-read on their own so the page stays live."""
    with ui.friendly_errors():
        summary = data.subscription_summary()
        status = data.sync_status()
    last = status.last_webhook_received
    active, health, failed, latest = st.columns(4, border=True)
    active.metric("Active subscriptions", f"{summary.active_subscriptions:,}")
    with health:
        st.metric("Webhook health", status.webhook_health.value.capitalize())
        ui.health_badge(status)
    with failed:
        st.metric("Failed payments", f"{status.failed_payments_count:,}")
        st.page_link(
            "pages/failed_payments.py", label="See the failing invoices", icon=":material/list:"
        )
    with latest:
        st.metric("Last webhook", ui.relative_time(last, status.as_of))
        st.caption(ui.absolute_time(last))
    if status.last_event is None:
        st.info(
            "No webhook has arrived yet. Point a Stripe webhook endpoint at the listener's "
            "`/webhooks/stripe` (see the README), or run `python -m finance_core demo`."
        )
    st.caption(f"As of {ui.absolute_time(status.as_of)} · refreshes every {ui.REFRESH_SECONDS} s")


headline()

with ui.friendly_errors():
    summary = data.subscription_summary()
    status = data.sync_status()

st.subheader("Plan distribution")
if summary.plan_distribution:
    st.plotly_chart(charts.plan_distribution(summary.plan_distribution), width="stretch")
else:
    st.info("No active subscriptions yet.")

revenue, payments = st.columns(2)
revenue.link_button(
    "Revenue in the Stripe Dashboard", summary.stripe_dashboard_url, icon=":material/open_in_new:"
)
payments.link_button(
    "Payments in the Stripe Dashboard", status.stripe_dashboard_url, icon=":material/open_in_new:"
)
