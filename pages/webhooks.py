"""Webhooks: feed health, thin events waiting for Stripe, traffic, API versions, failed events."""

import streamlit as st

from dashboard import auth, charts, data, tables, ui
from dashboard.text import link_target, md
from finance_core import demo
from finance_core.views.event_log import generation_failure_unsynced, stripe_event_url
from finance_core.views.queries import SyncStatus

ACTION_OUTCOME = "webhooks_action_outcome"
THIN_OUTCOME = "webhooks_thin_outcome"
WINDOWS = {"Last 24 hours": 24, "Last 7 days": 24 * 7}
VERSION_DAYS = 7

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
    thin_events(status)
    last = status.last_event
    if last is None:
        st.info(
            "No webhook has arrived yet. In the Stripe Dashboard, add an endpoint for the "
            "listener's `/webhooks/stripe` and set STRIPE_WEBHOOK_SECRET to its signing secret."
        )
    else:
        # The id and type come from Stripe: escaped, and the link only ever to Stripe.
        link = link_target(stripe_event_url(last.id, livemode=last.livemode))
        shown = f"[{md(last.id)}]({link})" if link else md(last.id)
        st.markdown(
            f"**Last event** {shown} · {md(last.type)} · created "
            f"{ui.absolute_time(last.created)} · received {ui.absolute_time(last.received_at)} "
            f"({ui.relative_time(last.received_at, status.as_of)})"
        )


def thin_events(status: SyncStatus) -> None:
    """Thin events stored and acknowledged, waiting for their objects from Stripe's API."""
    ui.show_flash(THIN_OUTCOME)
    if not status.thin_events_pending:
        return
    count, oldest = status.thin_events_pending, status.oldest_pending_since
    waiting = st.columns(3, border=True)
    waiting[0].metric("Thin events waiting for Stripe", f"{count:,}")
    waiting[1].metric("Waiting since", ui.relative_time(oldest, status.as_of))
    with waiting[2]:
        st.caption("Why they wait")
        st.text(status.pending_reason or "Being fetched from Stripe's API.")
    if viewer.is_admin:

        def resolve_now() -> None:
            try:
                due = data.resolve_now(viewer.username)
                outcome = (True, f"{due:,} thin events are due now; the listener fetches them.")
            except data.StoreUnavailable as exc:
                outcome = (False, str(exc))
            st.session_state[THIN_OUTCOME] = outcome

        st.button("Resolve now", on_click=resolve_now, icon=":material/cloud_download:")


health_panel()

failure = data.latest_generation_failure()
runs = data.sync_runs(limit=1)
if failure is not None and generation_failure_unsynced(
    failure=failure, last_sync=runs[0] if runs else None
):
    st.warning(
        f"Stripe reported on {ui.absolute_time(failure.created)} that it had failed to generate "
        "some events (the failure is resolved now). Those events never reached this listener "
        "and no redelivery will bring them: a sync reads the current state from Stripe's API "
        "instead."
        + (f" [Stripe's notice]({notice})" if (notice := link_target(failure.stripe_url)) else ""),
        icon=":material/warning:",
    )
    if not viewer.is_admin:
        st.caption("An admin can run a sync from the Stripe sync page.")
    elif not data.stripe_configured():
        st.caption("Set STRIPE_API_KEY for the dashboard to run a sync from here.")
    elif st.button("Sync now", key="generation_failure_sync", icon=":material/sync:"):
        data.start_sync(actor=viewer.username)
        st.switch_page("pages/sync.py")  # its progress and report

st.subheader("Events per hour by outcome")
window = st.segmented_control("Window", list(WINDOWS), default="Last 24 hours", key="window")
hours = WINDOWS[window or "Last 24 hours"]
end, hourly = data.events_per_hour(hours)
if hourly:
    st.plotly_chart(charts.events_per_hour(hourly, end=end, hours=hours), width="stretch")
else:
    st.info(f"No events received in the {(window or 'Last 24 hours').lower()}.")

st.subheader(f"API versions of the last {VERSION_DAYS} days")
versions = data.api_versions(VERSION_DAYS)
if versions:
    st.dataframe(**tables.api_version_table(versions))
    st.caption(
        "Stripe sends each endpoint's snapshot events in the API version set on it: a version "
        "older than the rest is an endpoint left behind. Thin events carry no version."
    )
else:
    st.caption(f"No event received in the last {VERSION_DAYS} days.")

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
    ui.in_full("Errors in full", [(row.id, row.error or "") for row in failed])
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

if viewer.is_admin and data.is_demo_store():
    st.subheader("Demo: a broken event")
    st.caption(
        "This store holds demo data only. Send a malformed event (a subscription update "
        "without its items, as a Stripe change might send it) to see what a failure looks like: "
        "health turns to error, the listener alerts, and the event waits above for Replay or "
        "Dismiss. Recorded in the audit log."
    )

    def send_broken() -> None:
        try:
            sent = data.send_broken_demo_event(actor=viewer.username)
            outcome = (True, f"Sent {sent}: it failed to apply, as meant.")
        except (data.StoreUnavailable, demo.NotADemoStore) as exc:
            outcome = (False, str(exc))
        st.session_state[ACTION_OUTCOME] = outcome

    st.button("Send a broken event", on_click=send_broken, icon=":material/bug_report:")
