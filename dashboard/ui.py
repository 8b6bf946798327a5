"""Small widgets and formats the pages share: times, the health badge, failure messages."""

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Literal

import streamlit as st

from dashboard import data
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
# Why Stripe paused a subscription (status_details.paused.subscription.type), in words.
PAUSE_REASONS = {
    "first_payment_failure": "first payment failed",
    "final_payment_failure": "final payment failed",
    "pause_requested": "pause requested",
    "trial_end_without_payment_method": "trial ended without a payment method",
    "system": "paused by Stripe",
    "unspecified": "no reason given",
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


def with_pause_reasons(breakdown: dict[str, int], paused: dict[str, int]) -> dict[str, int]:
    """The status breakdown with `paused` split by pause reason ("paused: final payment failed")."""
    if "paused" not in breakdown:
        return breakdown
    split = {}
    for status, count in breakdown.items():
        if status != "paused":
            split[status] = count
            continue
        for reason, reason_count in paused.items():
            split[f"paused: {PAUSE_REASONS.get(reason, reason.replace('_', ' '))}"] = reason_count
        rest = count - sum(paused.values())
        if rest > 0:  # counted a moment apart: a subscription paused in between
            split["paused: " + PAUSE_REASONS["unspecified"]] = (
                split.get("paused: " + PAUSE_REASONS["unspecified"], 0) + rest
            )
    return dict(sorted(split.items(), key=lambda item: -item[1]))
