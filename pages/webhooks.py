"""Webhooks: feed health, traffic by outcome, rejections, and failed events to settle."""

import streamlit as st

from dashboard import auth, charts, data, tables, ui
from finance_core.event_log import stripe_event_url

ACTION_OUTCOME = "webhooks_action_outcome"
WINDOWS = {"Last 24 hours": 24, "Last 7 days": 24 * 7}

viewer = auth.current_viewer()
st.title("Webhooks")


@st.fragment(run_every=ui.REFRESH_SECONDS)
def health_panel() -> None:
    """Health, its reason and the latest event, re-read on their own."""
    with ui.friendly_errors():
        status = data.sync_status()
    health, failing, rejected = st.columns(3, border=True)
    with health:
        st.metric("Webhook health", status.webhook_health.value.capitalize())
        ui.health_badge(status)
    failing.metric("Failed events awaiting action", f"{status.unresolved_failed_events:,}")
    rejected.metric("Rejected deliveries", f"{status.rejected_deliveries:,}")
    last = status.last_event
    if last is None:
        st.info(
            "No webhook has arrived yet. In the Stripe Dashboard, add an endpoint for the "
            "listener's `/webhooks/stripe` and set STRIPE_WEBHOOK_SECRET to its signing secret."
        )
    else:
        link = stripe_event_url(last.id, livemode=last.livemode)
        st.markdown(
            f"**Last event** [{last.id}]({link}) · `{last.type}` · created "
            f"{ui.absolute_time(last.created)} · received {ui.absolute_time(last.received_at)} "
            f"({ui.relative_time(last.received_at, status.as_of)})"
        )


health_panel()

st.subheader("Events per hour by outcome")
window = st.segmented_control("Window", list(WINDOWS), default="Last 24 hours", key="window")
hours = WINDOWS[window or "Last 24 hours"]
end, hourly = data.events_per_hour(hours)
if hourly:
    st.plotly_chart(charts.events_per_hour(hourly, end=end, hours=hours), width="stretch")
else:
    st.info(f"No events received in the {(window or 'Last 24 hours').lower()}.")

st.subheader("Rejected deliveries by reason")
reasons = data.rejections_by_reason()
if reasons:
    st.dataframe(**tables.rejection_table(reasons))
else:
    st.caption("No delivery has been rejected.")

st.subheader("Failed events")
ui.show_flash(ACTION_OUTCOME)
failed = data.failed_events()
if not failed:
    st.success("No failed events: every verified event was applied, replayed or dismissed.")
else:
    st.dataframe(**tables.event_table(failed))
    if viewer.is_admin:

        def act(action: str) -> None:
            event_id = st.session_state.get("failed_event")
            if not event_id:
                return
            try:
                if action == "replay":
                    outcome = data.replay(event_id, actor=viewer.username)
                else:
                    outcome = data.dismiss(event_id, actor=viewer.username)
            except data.StoreUnavailable as exc:
                outcome = (False, str(exc))
            st.session_state[ACTION_OUTCOME] = outcome

        st.selectbox(
            "Failed event",
            [row.id for row in failed],
            format_func=lambda event_id: next(
                f"{row.id} · {row.type}" for row in failed if row.id == event_id
            ),
            key="failed_event",
        )
        replay, dismiss, _ = st.columns([1, 1, 4])
        replay.button("Replay", on_click=act, args=("replay",), icon=":material/replay:")
        dismiss.button("Dismiss", on_click=act, args=("dismiss",), icon=":material/done_all:")
        refetch = (
            "or re-fetches it from Stripe when none is kept (Stripe keeps events 30 days)"
            if data.stripe_configured()
            else "or, once STRIPE_API_KEY is set, re-fetches it from Stripe when none is kept"
        )
        st.caption(
            f"Replay reprocesses the event from its kept payload, {refetch}: the same as "
            "`python -m finance_core replay`. Dismiss records that the event needs no more "
            "work, so health stops reporting it."
        )
    else:
        st.caption("An admin can replay or dismiss these events.")
