"""Alerts (admins): the alerts kept and each channel's result, the channels, a test alert."""

import streamlit as st

from dashboard import auth, data, tables, ui
from dashboard.text import md

PAGE_SIZE = 50
TRAIL = "alerts_trail"  # the `before` of each older page opened, for ← Newer

viewer = auth.current_viewer()
if not viewer.is_admin:  # app.py lists this page for admins only; this is the second lock
    st.error("Only an admin can see the alerts.")
    st.stop()

st.title("Alerts")
st.caption(
    "The listener checks webhook health, rejected deliveries and failed payments every "
    "ALERT_CHECK_SECONDS and alerts once when a problem starts and once when it ends, "
    "through Apprise to every channel in ALERT_URLS (Slack, Teams, email, PagerDuty, a JSON "
    "webhook...). A channel that fails is tried again with backoff; every attempt shows here."
)

st.subheader("Channels")
configured = data.alert_channels()
if configured:
    st.markdown("\n".join(f"- {md(name)}" for name in configured))
    st.caption("Scheme and host only: the rest of an Apprise URL holds its secrets.")
else:
    st.info(
        "No alert channel configured (ALERT_URLS is empty): alerts are kept below but not "
        "sent. Set ALERT_URLS to one or more Apprise URLs, comma-separated (for example "
        "`slack://TokenA/TokenB/TokenC/#finance` or `mailtos://user:password@example.com`), "
        "then restart the listener and the dashboard.",
        icon=":material/notifications_off:",
    )
if st.button("Send test alert", icon=":material/send:", disabled=not configured):
    with st.spinner("Sending a test alert to every channel…"):
        test = data.send_test_alert(actor=viewer.username)
    results = "\n".join(f"- {md(line)}" for line in tables.channel_results(test))
    if test.status == "sent":
        st.success(f"Test alert sent to every channel:\n\n{results}")
    else:
        st.error(f"The test alert did not reach every channel:\n\n{results}")

st.subheader("Morning digest")
schedule, digest_to = data.digest_schedule(), data.digest_channels()
if schedule:
    st.markdown(
        f"Sent once a day at `{schedule}` to "
        + (", ".join(f"`{name}`" for name in digest_to) if digest_to else "no channel")
        + ": active subscriptions by plan, new and canceled, failed payments, the feed and "
        "what waits for action. Each digest is kept below (rule `digest`)."
    )
else:
    st.info(
        "The morning digest is off (DIGEST_AT is empty). Set DIGEST_AT to a time and time zone "
        "such as `08:00 Europe/Berlin` (and DIGEST_URLS, if not to the alert channels), then "
        "restart the listener.",
        icon=":material/schedule:",
    )
if st.button("Send digest now", icon=":material/summarize:", disabled=not digest_to):
    with st.spinner("Sending today's digest to every digest channel…"):
        digest = data.send_digest_now(actor=viewer.username)
    results = "\n".join(f"- {md(line)}" for line in tables.channel_results(digest))
    if digest.status == "sent":
        st.success(f"Digest sent to every channel:\n\n{results}")
    else:
        st.error(f"The digest did not reach every channel:\n\n{results}")
    st.text(f"{digest.title}\n{digest.body}")

st.subheader("History")
trail: list[int] = st.session_state.setdefault(TRAIL, [])
page = data.alerts(PAGE_SIZE, trail[-1] if trail else None)
if page.alerts:
    st.dataframe(**tables.alert_table(page.alerts))
    ui.in_full(
        "Alerts in full",
        [
            (
                f"{ui.absolute_time(alert.created_at)} {alert.rule}",
                "\n".join([alert.title, alert.body, *tables.channel_results(alert)]),
            )
            for alert in page.alerts
        ],
    )
    first, last = page.alerts[0].created_at, page.alerts[-1].created_at
    st.caption(f"Newest first: {ui.absolute_time(first)} back to {ui.absolute_time(last)}.")
else:
    st.info("No alert yet: every rule has been fine since the listener started checking.")


def newer() -> None:
    st.session_state[TRAIL] = st.session_state[TRAIL][:-1]


def older() -> None:
    st.session_state[TRAIL] = [*st.session_state[TRAIL], page.older]


back, forward, _ = st.columns([1, 1, 4])
back.button("← Newer", on_click=newer, disabled=not trail)
forward.button("Older →", on_click=older, disabled=page.older is None)
