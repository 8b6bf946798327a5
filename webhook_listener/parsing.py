"""A verified body as a Stripe event, and why a delivery is refused; no `stripe` import here.

The writer process parses what the listener verified; keeping this apart from `verify`
spares the writer the stripe library's import time at every start.
"""

import json
from typing import Any

from finance_core.events import NotAStripeEvent, StripeEvent


class Rejected(Exception):
    """A delivery we refuse: a short reason code, a sentence, and the status code to answer."""

    def __init__(self, reason: str, message: str, *, status_code: int = 400) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.status_code = status_code


def parse_event(text: str) -> StripeEvent:
    """A verified body as a Stripe event; raises Rejected when it is not JSON or not an event."""
    try:
        payload: Any = json.loads(text)
    except ValueError:
        raise Rejected("malformed_json", "the body is not valid JSON") from None
    try:
        return StripeEvent.from_payload(payload)
    except NotAStripeEvent as exc:
        raise Rejected("not_an_event", f"the body is not a Stripe event: {exc}") from None
