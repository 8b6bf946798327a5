"""Overview: the four numbers and how they moved, the plan distribution and the way to Stripe."""

import streamlit as st

from dashboard import auth, charts, data, ui
from finance_core.views import statuses
from finance_core.views.changes import Changes

auth.current_viewer()
st.title("Overview")


def moved(label: str, value: str, changes: Changes, *, rise_is_good: bool) -> None:
    """A metric with its change since yesterday as the delta, and since a week ago beneath."""
    st.metric(
        label,
        value,
        delta=changes.since_yesterday,
        delta_description="since yesterday" if changes.since_yesterday is not None else None,
        delta_color="normal" if rise_is_good else "inverse",
    )
    if changes.since_yesterday is None and changes.since_last_week is None:
        st.caption("Changes not known yet: counted once a day from a listener's first day")
        return
    if changes.since_yesterday is None:
        st.caption(ui.change_words(None, "since yesterday"))
    st.caption(ui.change_words(changes.since_last_week, "since 7 days ago"))


@st.fragment(run_every=ui.REFRESH_SECONDS)
def headline() -> None:
    """The API's numbers and their changes, re-read on their own so the page stays live."""
    with ui.friendly_errors():
        summary = data.subscription_summary()
        status = data.sync_status()
        breakdown = data.status_breakdown()
        active_changes = data.active_subscription_changes()
        failed_changes = data.failed_payment_changes(status.failed_payments_count)
    last = status.last_webhook_received
    active, health, failed, latest = st.columns(4, border=True)
    with active:
        moved(
            "Active subscriptions",
            f"{summary.active_subscriptions:,}",
            active_changes,
            rise_is_good=True,
        )
        st.text(
            statuses.active_made_of(breakdown, data.settings().active_subscription_statuses),
            help="Which statuses count as active (ACTIVE_SUBSCRIPTION_STATUSES)",
        )
    with health:
        st.metric("Webhook health", status.webhook_health.value.capitalize())
        ui.health_badge(status)
    with failed:
        moved(
            "Failed payments",
            f"{status.failed_payments_count:,}",
            failed_changes,
            rise_is_good=False,
        )
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

active_words = ", ".join(
    statuses.status_words(name) for name in data.settings().active_subscription_statuses
)
delayed = ui.duration_words(data.settings().webhook_delayed_after)
with st.expander("What these numbers mean", icon=":material/help:"):
    st.markdown(
        f"""
- **Active subscriptions**: the subscriptions whose status in Stripe is one of: {active_words}.
  Customers on a free trial and customers whose last payment failed but who have not yet
  been cancelled count; cancelled, unpaid, paused and never-started subscriptions do not.
  The line beneath says how many there are of each.
- **Plan**: the product of a subscription's first item in Stripe. Each subscription counts
  once, under one plan; the shares of the plans add up to 100%.
- **Failed payments**: invoices whose latest payment attempt failed and that are still open.
  An invoice counts once however many attempts failed. It leaves the count when it is paid,
  voided, marked uncollectible or deleted, and an older failure arriving late does not bring
  it back.
- **Changes**: each number against its value at the end of yesterday and at the end of the
  day a week ago, in UTC days. Active subscriptions come from the store's daily history;
  failed payments from the count the listener keeps each day, so their change is not known
  for the days before a listener first ran.
- **Webhook health**: whether Stripe's notifications reach us and are applied.
  *Healthy*: they arrive and are applied. *Delayed*: none arrived in the last {delayed}.
  *Error*: a notification could not be applied and nobody has replayed or dismissed it yet,
  or events waiting for details from Stripe have waited longer than {delayed}.
  Refused deliveries (a wrong signature, say) do not change it; the Webhooks page lists them.
- **Last webhook**: when the latest notification from Stripe arrived, repeats included.
- **As of**: when these numbers were computed. Every time is in UTC.
"""
    )
