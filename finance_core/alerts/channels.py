"""Alert channels: Apprise URLs checked, named without their secrets, sent one attempt at a time.

An Apprise URL carries its channel's credentials (a Slack webhook's tokens, a mail password), so
it is never logged, stored or shown: a channel is named by its scheme and host, and not even the
host where the plugin keeps a token there (`slack://TokenA/...`).
"""

import logging
from dataclasses import dataclass
from functools import cache
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

# A channel that neither answers nor fails is given up on after this long (one attempt).
ATTEMPT_TIMEOUT_S = 10.0
MAX_DETAIL_LENGTH = 500
# Parts of a URL shorter than this are not worth masking in a message (ports, "on", "us").
SHORTEST_SECRET = 4


@dataclass(frozen=True, slots=True)
class Attempt:
    """What one attempt to send to one channel did, in words safe to store and show."""

    outcome: str  # "sent", "failed" or "timed_out"
    detail: str

    @property
    def sent(self) -> bool:
        return self.outcome == "sent"


def _apprise() -> Any:
    """The Apprise module, imported on first use, with its log kept to itself.

    Apprise logs a URL it cannot parse in full, and some plugins name a malformed token in
    their warnings: none of that may reach our logs. What an attempt did is read from its
    result instead.
    """
    import apprise

    logging.getLogger("apprise").propagate = False
    return apprise


@cache
def _asset() -> Any:
    apprise = _apprise()
    return apprise.AppriseAsset(
        app_id="PenguinMails Finance", app_desc="PenguinMails Finance alerts", secure_logging=True
    )


def _plugin(url: str) -> Any:
    """The Apprise plugin for `url`, or None when Apprise cannot parse or use it."""
    return _apprise().Apprise.instantiate(url, asset=_asset())


def unusable_positions(urls: list[str]) -> list[int]:
    """The positions (from 1) of the URLs Apprise cannot send to."""
    return [position for position, url in enumerate(urls, 1) if _plugin(url) is None]


def describe(url: str) -> str:
    """The channel as an admin may see it: `json://127.0.0.1:8123`, `mailto://smtp.example.com`.

    Scheme and host only, and the host only where the plugin takes it for a host name.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower() or "?"
    plugin = _plugin(url)
    if plugin is None:
        return f"{scheme}:// (not a usable Apprise URL)"
    if "host" not in plugin.template_tokens or not parts.hostname:
        return f"{scheme}:// ({plugin.service_name})"
    port = f":{parts.port}" if _port(parts) else ""
    return f"{scheme}://{parts.hostname}{port}"


def _port(parts: Any) -> int | None:
    try:
        return parts.port
    except ValueError:  # not a number: not a port worth showing
        return None


def send_once(url: str, *, title: str, body: str, timeout: float = ATTEMPT_TIMEOUT_S) -> Attempt:
    """One attempt to send an alert to one channel, given up on after `timeout` seconds.

    Apprise's own retries are left off (`retry=0` is its default): ours are spaced out and
    each is recorded (see `sending`).
    """
    apprise = _apprise()
    plugin = _plugin(url)
    if plugin is None:
        return Attempt("failed", "Apprise cannot use this URL")
    notifier = apprise.Apprise(asset=_asset())
    notifier.add(plugin)
    result = notifier.notify(body=body, title=title, timeout=timeout)
    status = apprise.AppriseResultStatus
    if result.status == status.SUCCESS:
        return Attempt("sent", "")
    outcome = "timed_out" if result.status == status.TIMEOUT else "failed"
    detail = " ".join(entry.message for entry in result.logs())
    return Attempt(outcome, _without_secrets(detail, url)[:MAX_DETAIL_LENGTH])


def _without_secrets(text: str, url: str) -> str:
    """`text` with every part of `url` that could be a credential masked."""
    parts = urlsplit(url)
    candidates = {parts.username, parts.password, parts.netloc, parts.hostname}
    candidates.update(unquote(segment) for segment in parts.path.split("/"))
    candidates.update(value for _, value in parse_qsl(parts.query))
    host = describe(url).partition("://")[2]
    for secret in sorted((c for c in candidates if c), key=len, reverse=True):
        if len(secret) >= SHORTEST_SECRET and secret not in host:
            text = text.replace(secret, "***")
    return text.strip()
