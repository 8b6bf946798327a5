"""Reading from Stripe's API with the official library: paging that survives rate limits.

Only `sync` and `replay` talk to Stripe; the listener never does. Objects come back as plain
dicts, the same shape a webhook carries, so that the same handlers apply them.
"""

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import stripe

from finance_core.backoff import Backoff
from finance_core.settings import Settings

PAGE_SIZE = 100
# The library retries connection errors, 409s and 5xx itself; 429s are ours (see Pager).
LIBRARY_RETRIES = 3


class StripeUnavailable(RuntimeError):
    """Stripe's API refused or failed for good; the message says what to do."""


class StripePermissionDenied(StripeUnavailable):
    """A restricted STRIPE_API_KEY may not read this (403); Stripe's message names the right."""


class NotFoundAtStripe(LookupError):
    """Stripe has no such object (404), or no longer keeps it."""


def make_client(settings: Settings) -> stripe.StripeClient:
    """A Stripe client for the configured key and API base (a clear error without a key)."""
    return stripe.StripeClient(
        settings.api_key(),
        base_addresses={"api": settings.stripe_api_base},
        max_network_retries=LIBRARY_RETRIES,
    )


# A StripeClient listing method (`client.v1.products.list`, ...): its parameters are a TypedDict
# per resource, ours a plain dict of the same keys, hence Any.
ListPage = Callable[[Any], stripe.ListObject[Any]]


@dataclass
class Pager:
    """Calls and auto-paginated listings that wait out 429s and resume where they stopped."""

    backoff: Backoff = field(default_factory=Backoff)
    rate_limit_waits: int = 0

    def call(self, request: Callable[[], Any]) -> Any:
        waits_in_a_row = 0
        while True:
            try:
                return request()
            except stripe.RateLimitError as exc:
                waits_in_a_row += 1
                self._wait(exc, waits_in_a_row)
            except stripe.StripeError as exc:
                if exc.http_status == 404:
                    raise NotFoundAtStripe(str(exc.user_message or exc)) from None
                raise _unavailable(exc) from None

    def list_all(self, list_page: ListPage, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """Every object of a listing, as plain dicts, through the library's auto-pagination.

        When a page request is rate limited the listing starts again after the last object
        handed out, so nothing is skipped or repeated.
        """
        last_id: str | None = None
        waits_in_a_row = 0
        while True:
            page_params = {**params, "limit": PAGE_SIZE}
            if last_id is not None:
                page_params["starting_after"] = last_id
            try:
                for item in list_page(page_params).auto_paging_iter():
                    waits_in_a_row = 0
                    last_id = item["id"]
                    yield item.to_dict(for_json=True)
                return
            except stripe.RateLimitError as exc:
                waits_in_a_row += 1
                self._wait(exc, waits_in_a_row)
            except stripe.StripeError as exc:
                raise _unavailable(exc) from None

    def _wait(self, exc: stripe.RateLimitError, waits_in_a_row: int) -> None:
        if waits_in_a_row > self.backoff.max_waits_in_a_row:
            raise StripeUnavailable(
                f"Stripe kept answering 429 (rate limited) after {waits_in_a_row - 1} waits; "
                "run again later: what was read so far is kept"
            ) from None
        self.rate_limit_waits += 1
        headers = {str(k).lower(): str(v) for k, v in (exc.headers or {}).items()}
        retry_after = headers.get("retry-after")
        self.backoff.sleep(self.backoff.delay(waits_in_a_row, retry_after))


def fetch_event(client: stripe.StripeClient, pager: Pager, event_id: str) -> dict[str, Any]:
    """One event as Stripe keeps it (for 30 days), as a plain dict."""
    event = pager.call(lambda: client.v1.events.retrieve(event_id))
    return event.to_dict(for_json=True)


def _unavailable(exc: stripe.StripeError) -> StripeUnavailable:
    if isinstance(exc, stripe.AuthenticationError):
        return StripeUnavailable("Stripe refused STRIPE_API_KEY (401): check the key")
    if isinstance(exc, stripe.PermissionError):
        return StripePermissionDenied(
            "STRIPE_API_KEY may not read this (403): give the restricted key read access to "
            f"products, prices, subscriptions, invoices and events ({exc.user_message or exc})"
        )
    if isinstance(exc, stripe.APIConnectionError):
        return StripeUnavailable(f"cannot reach Stripe's API: {exc.user_message or exc}")
    status = exc.http_status or "no status"
    return StripeUnavailable(f"Stripe's API answered {status}: {exc.user_message or exc}")
