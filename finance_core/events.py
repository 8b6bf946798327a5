"""A verified Stripe event as the rest of finance_core sees it, and what became of it."""

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class NotAStripeEvent(ValueError):
    """Verified JSON that is not shaped like a Stripe event."""


class Outcome(StrEnum):
    PROCESSED = "processed"
    DUPLICATE = "duplicate"
    IGNORED = "ignored"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class StripeEvent:
    """The envelope fields we rely on, plus the event's object as a plain dict."""

    id: str
    type: str
    created: int
    livemode: bool
    api_version: str | None
    object: dict[str, Any]

    @classmethod
    def from_payload(cls, payload: Any) -> "StripeEvent":
        """Check the envelope of a parsed webhook body; raise NotAStripeEvent if it is not one."""
        if not isinstance(payload, dict):
            raise NotAStripeEvent("body is not a JSON object")
        if payload.get("object", "event") != "event":
            raise NotAStripeEvent("object is not 'event'")
        event_id, event_type = payload.get("id"), payload.get("type")
        if not isinstance(event_id, str) or not event_id or len(event_id) > 255:
            raise NotAStripeEvent("event has no valid 'id'")
        if not isinstance(event_type, str) or not event_type or len(event_type) > 255:
            raise NotAStripeEvent("event has no valid 'type'")
        created = payload.get("created")
        if isinstance(created, bool) or not isinstance(created, int) or not 0 <= created < 2**62:
            raise NotAStripeEvent("event has no valid 'created' timestamp")
        data = payload.get("data")
        if not isinstance(data, dict) or not isinstance(data.get("object"), dict):
            raise NotAStripeEvent("event has no 'data.object'")
        api_version = payload.get("api_version")
        if not isinstance(api_version, str) or len(api_version) > 64:
            api_version = None
        livemode = payload.get("livemode")
        if not isinstance(livemode, bool):
            livemode = data["object"].get("livemode") is True
        return cls(event_id, event_type, created, livemode, api_version, data["object"])


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    outcome: Outcome
    event_id: str
    error: str | None = None
