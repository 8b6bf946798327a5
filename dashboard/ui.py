"""Small widgets and formats the pages share: times, the health badge, failure messages."""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from dashboard import data
from finance_core.queries import SyncStatus, WebhookHealth
from finance_core.settings import SettingsError

# Health panels re-read the store on their own this often (the cache lasts 10 seconds).
REFRESH_SECONDS = 30
HEALTH_COLORS = {
    WebhookHealth.HEALTHY: "green",
    WebhookHealth.DELAYED: "orange",
    WebhookHealth.ERROR: "red",
}
# The badge says what the state asks of the reader; the metric beside it names the state.
HEALTH_BADGES = {
    WebhookHealth.HEALTHY: "Receiving",
    WebhookHealth.DELAYED: "Quiet",
    WebhookHealth.ERROR: "Needs attention",
}
HEALTH_ICONS = {
    WebhookHealth.HEALTHY: ":material/check_circle:",
    WebhookHealth.DELAYED: ":material/schedule:",
    WebhookHealth.ERROR: ":material/error:",
}
STATUS_COLORS = {
    "processed": "#2e9e5b",
    "ignored": "#9aa5b1",
    "failed": "#d64545",
    "dismissed": "#e8a33d",
}


@contextmanager
def friendly_errors() -> Iterator[None]:
    """Show an unreachable store or a bad setting as a message on the page, then stop."""
    try:
        yield
    except data.StoreUnavailable as exc:
        st.error(str(exc), icon=":material/database:")
        st.caption(
            "The listener keeps answering Stripe and Stripe retries what it could not "
            "deliver; this page works again once the database is back."
        )
        st.stop()
    except SettingsError as exc:
        st.error(f"The dashboard is not configured: {exc}", icon=":material/settings:")
        st.stop()


def absolute_time(moment: datetime | None) -> str:
    """A UTC time to the second, as finance reads it."""
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC") if moment else "never"


def relative_time(moment: datetime | None, now: datetime) -> str:
    """How long ago, short enough for a metric card: "just now", "5 min ago", "2 d ago"."""
    if moment is None:
        return "never"
    seconds = int((now - moment).total_seconds())
    if seconds < 5:
        return "just now"  # also when the listener's clock runs slightly ahead of ours
    for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60), ("s", 1)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return "just now"


def health_badge(status: SyncStatus) -> None:
    """The webhook health as a coloured badge with its reason in words beside it."""
    health = status.webhook_health
    st.badge(HEALTH_BADGES[health], color=HEALTH_COLORS[health], icon=HEALTH_ICONS[health])
    st.caption(status.health_reason.capitalize())


def show_flash(key: str) -> None:
    """Show (once) the outcome an action callback left in the session."""
    outcome = st.session_state.pop(key, None)
    if outcome:
        ok, message = outcome
        (st.success if ok else st.error)(message)


def keyset_pager(
    trail_key: str, next_cursor: Any, *, refresh: Callable[[], None]
) -> DeltaGenerator:
    """← Newer, Older → and Refresh over keyset pages whose cursors the session keeps under
    `trail_key`; returns the column left beside them (for an export)."""

    def newer() -> None:
        st.session_state[trail_key] = st.session_state[trail_key][:-1]

    def older() -> None:
        st.session_state[trail_key] = [*st.session_state[trail_key], next_cursor]

    back, forward, again, rest = st.columns([1, 1, 1, 3])
    back.button("← Newer", on_click=newer, disabled=not st.session_state.get(trail_key))
    forward.button("Older →", on_click=older, disabled=next_cursor is None)
    again.button("Refresh", on_click=refresh, icon=":material/refresh:")
    return rest
