"""A verified body as a Stripe event, and why a delivery is refused; no `stripe` import here.

The writer process parses what the listener verified; keeping this apart from `verify`
spares the writer the stripe library's import time at every start.
"""

import json
from datetime import datetime
from typing import Any

from finance_core.feed.events import NotAStripeEvent, StripeEvent, ThinEvent, parse_payload


class Rejected(Exception):
    """A delivery we refuse: a short reason code, a sentence, and the status code to answer."""

    def __init__(self, reason: str, message: str, *, status_code: int = 400) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.status_code = status_code


def parse_event(text: str, received_at: datetime) -> StripeEvent | ThinEvent:
    """A verified body as a snapshot or thin event; Rejected when not JSON or not an event."""
    try:
        payload: Any = json.loads(text)
    except ValueError:
        raise Rejected("malformed_json", "the body is not valid JSON") from None
    except RecursionError:
        raise Rejected("malformed_json", "the body is nested too deeply to read") from None
    try:
        return parse_payload(payload, received_at=received_at)
    except NotAStripeEvent as exc:
        raise Rejected("not_an_event", f"the body is not a Stripe event: {exc}") from None
