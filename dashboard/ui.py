"""Small widgets and formats the pages share: times, the health badge, failure messages."""

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Literal

import streamlit as st

from dashboard import data
from dashboard.text import md
from finance_core.settings import SettingsError
from finance_core.views.queries import SyncStatus, WebhookHealth

# Health panels re-read the store on their own this often (the cache lasts 10 seconds).
REFRESH_SECONDS = 30
# The colours st.badge takes.
BadgeColor = Literal["red", "orange", "yellow", "blue", "green", "violet", "gray", "primary"]
HEALTH_COLORS: dict[WebhookHealth, BadgeColor] = {
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
    "pending": "#8250df",
}


@contextmanager
def friendly_errors() -> Iterator[None]:
    """Show an unreachable store or a bad setting as a message on the page, then stop."""
    try:
        yield
    except data.StoreUnavailable as exc:
        st.error(md(exc), icon=":material/database:")
        st.caption(
            "The listener keeps answering Stripe and Stripe retries what it could not "
            "deliver; this page works again once the database is back."
        )
        st.stop()
    except SettingsError as exc:
        st.error(f"The dashboard is not configured: {md(exc)}", icon=":material/settings:")
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
    # The reason may quote Stripe (a disabled endpoint's reason, ids, our URL): shown as text,
    # its first letter raised only (str.capitalize would lower every other, ids included).
    reason = status.health_reason
    st.caption(md(reason[:1].upper() + reason[1:]))


def show_flash(key: str) -> None:
    """Show (once) the outcome an action callback left in the session."""
    outcome = st.session_state.pop(key, None)
    if outcome:
        ok, message = outcome
        (st.success if ok else st.error)(md(message))


def change_words(change: int | None, since: str) -> str:
    """A change in words for a caption: "+12 since 7 days ago", "no change since yesterday"."""
    if change is None:
        return f"Change {since} not known yet"
    if change == 0:
        return f"No change {since}"
    return f"{change:+,} {since}"


def duration_words(seconds: int) -> str:
    """A setting's duration as the reader says it: "10 minutes", "1 hour", "90 seconds"."""
    for unit, size in (("hour", 3_600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds} seconds"


# A "large" table column shows about this many characters; longer texts are also shown whole.
CELL_CHARS = 60
IN_FULL_HELP = "Long texts are shown whole below the table"


def in_full(title: str, items: Iterable[tuple[str, str]]) -> None:
    """Texts too long for their table cell, whole and wrapped below the table, as plain text.

    `items` pairs what a text belongs to (an event id, a time) with the text; only the long
    ones are listed, in an expander titled `title` with their number.
    """
    long = [(owner, text) for owner, text in items if len(text) > CELL_CHARS]
    if not long:
        return
    with st.expander(f"{title} ({len(long)})", icon=":material/notes:"):
        for owner, text in long:
            st.text(f"{owner}: {text}")
