"""Signature verification with the official `stripe` library, and the reasons we refuse a body."""

import stripe

from webhook_listener.parsing import Rejected

__all__ = ["Rejected", "verify_signature"]


# stripe-python's messages, mapped to our reason codes (checked by the tests).
_SIGNATURE_REASONS = (
    ("No Stripe-Signature header", "missing_signature"),
    ("Unable to extract timestamp", "malformed_signature"),
    ("No signatures found with expected scheme", "malformed_signature"),
    ("Timestamp outside the tolerance zone", "stale_timestamp"),
    ("No signatures found matching", "bad_signature"),
)


def _signature_reason(error: stripe.SignatureVerificationError) -> str:
    message = str(error.user_message or error)
    for prefix, reason in _SIGNATURE_REASONS:
        if message.startswith(prefix):
            return reason
    return "bad_signature"


def verify_signature(body: bytes, header: str | None, *, secrets: list[str], tolerance: int) -> str:
    """Verify the raw body against every configured secret; returns the body as text.

    Raises Rejected when no secret's signature matches (or the header or body is unusable).
    """
    if not header:
        raise Rejected("missing_signature", "the Stripe-Signature header is missing")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise Rejected("invalid_utf8", "the body is not UTF-8 text") from None

    reasons = []
    for secret in secrets:
        try:
            stripe.WebhookSignature.verify_header(text, header, secret, tolerance or None)
            return text
        except stripe.SignatureVerificationError as error:
            reasons.append(_signature_reason(error))
    # A signature that matched but is too old says more than the mismatches beside it.
    reason = "stale_timestamp" if "stale_timestamp" in reasons else reasons[0]
    raise Rejected(reason, _MESSAGES[reason])


_MESSAGES = {
    "missing_signature": "the Stripe-Signature header is missing",
    "malformed_signature": "the Stripe-Signature header has no timestamp or no v1 signature",
    "stale_timestamp": "the signature timestamp is outside the tolerance",
    "bad_signature": "no v1 signature matches any configured signing secret",
}
