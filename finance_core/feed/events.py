"""A verified Stripe event as the rest of finance_core sees it, and what became of it.

Two kinds arrive: snapshot events (`"object": "event"`, the object's state in `data.object`)
and, from event destinations, thin events (`"object": "v2.core.event"`, a pointer to the
object in `related_object` and an ISO `created`).
"""

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, TypeGuard


class NotAStripeEvent(ValueError):
    """Verified JSON that is not shaped like a Stripe event."""


class Outcome(StrEnum):
    PROCESSED = "processed"
    DUPLICATE = "duplicate"
    IGNORED = "ignored"
    FAILED = "failed"
    QUEUED = "queued"  # a thin event, stored as pending until its object is fetched


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


THIN_EVENT_OBJECT = "v2.core.event"
# The Stripe objects we keep, as a thin event's related_object.type names them.
KEPT_OBJECT_TYPES = frozenset({"subscription", "invoice", "product", "price", "plan"})


@dataclass(frozen=True, slots=True)
class ThinEvent:
    """A thin event notification: which object changed, not how (fetched from Stripe's API).

    `created` is in whole seconds like a snapshot event's. `related_id` is None when the
    notification names no usable object.
    """

    id: str
    type: str
    created: int
    livemode: bool
    related_type: str | None
    related_id: str | None
    context: str | None
    snapshot_event: str | None

    api_version = None  # a thin notification has no payload version

    @property
    def about_kept_object(self) -> bool:
        """Whether it is a `v1.*` event about an object we keep (it is then queued)."""
        return self.type.startswith("v1.") and self.related_type in KEPT_OBJECT_TYPES

    @classmethod
    def from_payload(cls, payload: dict[str, Any], *, received_at: datetime) -> "ThinEvent":
        """Check a thin notification's envelope; NotAStripeEvent without an id and a type.

        Everything else is taken leniently, since a verified thin delivery must never be
        refused: a `created` that does not parse becomes the time it was received.
        """
        event_id, event_type = payload.get("id"), payload.get("type")
        if not _valid_text(event_id):
            raise NotAStripeEvent("thin event has no valid 'id'")
        if not _valid_text(event_type):
            raise NotAStripeEvent("thin event has no valid 'type'")
        related = payload.get("related_object")
        related = related if isinstance(related, dict) else {}
        related_type, related_id = related.get("type"), related.get("id")
        context, snapshot = payload.get("context"), payload.get("snapshot_event")
        return cls(
            id=event_id,
            type=event_type,
            created=_iso_seconds(payload.get("created"), received_at),
            livemode=payload.get("livemode") is True,
            related_type=related_type if _valid_text(related_type) else None,
            related_id=related_id if _valid_text(related_id) else None,
            context=context if _valid_text(context) else None,
            snapshot_event=snapshot if _valid_text(snapshot) else None,
        )


def parse_payload(payload: Any, *, received_at: datetime) -> "StripeEvent | ThinEvent":
    """A parsed, verified body as a snapshot or a thin event; NotAStripeEvent if neither."""
    if isinstance(payload, dict) and payload.get("object") == THIN_EVENT_OBJECT:
        return ThinEvent.from_payload(payload, received_at=received_at)
    return StripeEvent.from_payload(payload)


def _valid_text(value: Any) -> TypeGuard[str]:
    return isinstance(value, str) and 0 < len(value) <= 255


def _iso_seconds(value: Any, fallback: datetime) -> int:
    """An ISO 8601 time ("2026-11-02T10:00:00.000Z") as whole epoch seconds."""
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            if moment.tzinfo is not None and moment.year >= 1970:
                return int(moment.timestamp())
    return int(fallback.timestamp())


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    outcome: Outcome
    event_id: str
    error: str | None = None
