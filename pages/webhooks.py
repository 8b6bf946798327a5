"""Webhooks: feed health, Stripe's view of the feed, thin events waiting for Stripe, traffic,
API versions, failed events."""

import streamlit as st

from dashboard import auth, charts, data, tables, ui
from dashboard.text import link_target, md
from finance_core import demo
from finance_core.feed.feed_check import STRIPE_WEBHOOKS, FeedCheckReport, Verdict
from finance_core.views.event_log import generation_failure_unsynced, stripe_event_url
from finance_core.views.queries import SyncStatus

ACTION_OUTCOME = "webhooks_action_outcome"
THIN_OUTCOME = "webhooks_thin_outcome"
FEED_OUTCOME = "webhooks_feed_check_outcome"
TURN_ON = (
    "To turn it on, set STRIPE_ENDPOINT_URL on the listener to its public `/webhooks/stripe` "
    "address, exactly as entered in the Stripe Dashboard, and STRIPE_API_KEY to a key that may "
    "read webhook endpoints and events (a restricted key needs Webhook Endpoints: Read and "
    "Events: Read). The listener then asks Stripe every FEED_CHECK_MINUTES (60 by default)."
)
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


@st.fragment(run_every=ui.REFRESH_SECONDS)
def feed_check_panel() -> None:
    """Stripe's own view of our endpoint (SPEC 17): what the latest check found, and when."""
    st.subheader("Stripe's view of the feed")
    st.caption(
        "Silence can mean nothing happened or that Stripe stopped sending: the listener asks "
        "Stripe whether our endpoint is enabled and sends every event the numbers need, and "
        "fetches the events Stripe could not deliver."
    )
    ui.show_flash(FEED_OUTCOME)
    with ui.friendly_errors():
        state = data.feed_check_state()
    report = state.report
    if report is None or state.verdict is None:
        st.info(f"Not checked yet. {TURN_ON}", icon=":material/help:")
    elif state.verdict == Verdict.OFF:
        reasons = "; ".join(report.warnings)
        st.info(f"Off: {md(reasons)}. {TURN_ON}", icon=":material/toggle_off:")
    else:
        feed_check_result(report, state.verdict, state.problem)
        st.caption(
            f"Last checked {ui.absolute_time(state.checked_at)} "
            f"({ui.relative_time(state.checked_at, data.now())}), "
            + (
                "on the listener's schedule"
                if report.triggered_by == "schedule"
                else f"by {md(report.triggered_by)} (Check now)"
            )
            + f", for {md(report.endpoint_url)}."
        )
    if state.running:
        st.caption("A check is running now.")
    st.link_button(
        "Webhooks in the Stripe Dashboard", STRIPE_WEBHOOKS, icon=":material/open_in_new:"
    )
    if not viewer.is_admin:
        st.caption("An admin can run the check now.")
    elif not data.feed_check_configured():
        st.caption(
            "Set STRIPE_ENDPOINT_URL and STRIPE_API_KEY for the dashboard to check from here."
        )
    else:

        def check_now() -> None:
            try:
                outcome = check_outcome(data.check_feed_now(viewer.username))
            except data.StoreUnavailable as exc:
                outcome = (False, str(exc))
            st.session_state[FEED_OUTCOME] = outcome

        st.button("Check now", on_click=check_now, icon=":material/fact_check:")


def feed_check_result(report: FeedCheckReport, verdict: str, problem: str | None) -> None:
    """The verdict in words, what Stripe showed and what was recovered; Stripe's text as text."""
    if verdict == Verdict.OK:
        st.success(
            "OK: Stripe has our endpoint enabled and sends it every event the numbers need.",
            icon=":material/check_circle:",
        )
    elif verdict == Verdict.ERROR:
        st.error(f"Problem: {md(problem or '')}.", icon=":material/error:")
    else:  # Stripe could not be asked: say why; the last finding it allowed still stands
        st.warning(f"Could not check: {md('; '.join(report.warnings))}.", icon=":material/warning:")
        if problem:
            st.error(
                f"The last check that reached Stripe found a problem: {md(problem)}.",
                icon=":material/error:",
            )
    if verdict != Verdict.UNAVAILABLE:
        for warning in report.warnings:  # API versions, events that could not be read
            st.warning(f"{md(warning)}.", icon=":material/warning:")
    found, recovered = st.columns(2, border=True)
    found.metric("Endpoints found at Stripe", f"{len(report.found):,}")
    recovered.metric("Missed events recovered", f"{report.missed_events.recovered:,}")
    recovered.caption(
        "Events Stripe could not deliver in the last 3 days, fetched and applied as a sync does"
        + (
            f"; {report.missed_events.failed:,} could not be applied (see Failed events)"
            if report.missed_events.failed
            else ""
        )
        + "."
    )
    if report.found:
        st.dataframe(**tables.destination_table(report.found))


def check_outcome(report: FeedCheckReport | None) -> tuple[bool, str]:
    """What Check now did, in words for the flash above the result."""
    if report is None:
        return True, "A listener is checking right now: its result shows here when it is done."
    recovered = report.missed_events.recovered
    if report.verdict == Verdict.OK:
        return (
            True,
            f"Checked just now: the feed is complete; {recovered:,} missed events recovered.",
        )
    if report.verdict == Verdict.ERROR:
        return False, f"Checked just now: a problem (below); {recovered:,} missed events recovered."
    return False, f"Stripe could not be asked: {md('; '.join(report.warnings))}."


health_panel()
feed_check_panel()

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
