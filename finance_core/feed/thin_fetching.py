"""Fetching a thin event's object from Stripe: pacing, backoff, and what each answer means.

Fetches are paced under `STRIPE_API_MAX_RPS` (evenly spaced here, and within a moving window
shared by every listener through `RATE_LIMIT_STORAGE_URI`) and back off with jitter on 429,
5xx and network errors. A 404 is `NotFound`; a refused key, a rate limit, an outage or a 5xx
is a `Retry` with the reason health reports and how long to wait.
"""

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pycurl
import stripe
from limits import RateLimitItemPerSecond
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

from finance_core.feed.thin_claims import MAX_ERROR_LENGTH, Pending
from finance_core.settings import Settings

FETCH_TIMEOUT_S = 10.0
PACE_SHARE = 0.9  # of STRIPE_API_MAX_RPS: the margin for requests' varying travel time
KEY_REFUSED_RETRY_S = 60.0
FIRST_BACKOFF_S = 1.0
MAX_BACKOFF_S = 300.0

NO_KEY = (
    "STRIPE_API_KEY is not set on the listener, so thin events cannot be resolved: set a "
    "restricted key with read access to products, prices, subscriptions and invoices, and "
    "restart the listener"
)
KEY_REFUSED = "Stripe refused STRIPE_API_KEY ({status}): check the key and its permissions"
UNREACHABLE = "Stripe's API cannot be reached ({detail}); retrying with backoff"
RATE_LIMITED = "Stripe is rate limiting the fetches (429); retrying with backoff"
STRIPE_ERROR = "Stripe's API answered {status}; retrying with backoff"


class Retry(Exception):
    """A fetch that did not answer for good: try the object's events again later.

    `reason` (None: keep the one recorded before) is what health reports once the events
    have waited long; `failed_request` says whether Stripe was asked, which counts as an
    attempt and slows every fetch down for a while.
    """

    def __init__(self, reason: str | None, delay_s: float, *, failed_request: bool) -> None:
        super().__init__(reason or "waiting")
        self.reason = reason[:MAX_ERROR_LENGTH] if reason else None
        self.delay_s = delay_s
        self.failed_request = failed_request


class NotFound(Exception):
    """Stripe has no such object (404)."""


class Pacer:
    """Requests under `per_second` a second, for every listener process together.

    Starts are spaced evenly here, and each also takes a place in a moving one-second window
    in the rate-limit storage, which several listener processes share through Redis. Both
    run a tenth below the limit: requests take varying time to reach Stripe (threads, a busy
    machine, the network), and some that started apart arrive together.
    """

    def __init__(
        self,
        per_second: int,
        storage_uri: str,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        pace = max(1, int(per_second * PACE_SHARE))
        self.interval = 1.0 / pace
        self.limit = RateLimitItemPerSecond(pace)
        # Wrapped, Redis being away is a StorageError whatever the backend: a transient fault.
        storage = storage_from_string(storage_uri, wrap_exceptions=True)
        self.limiter = MovingWindowRateLimiter(storage)
        self.sleep, self.clock = sleep, clock
        self._next = 0.0
        self._lock = threading.Lock()

    def wait_turn(self) -> None:
        with self._lock:
            now = self.clock()
            start = max(now, self._next)
            self._next = start + self.interval
        if start > now:
            self.sleep(start - now)
        while not self.limiter.hit(self.limit, "stripe-api-fetches"):
            self.sleep(self.interval)


@dataclass
class Backoff:
    """Jittered exponential delays, per object and, after 429s and outages, for every fetch."""

    first_s: float = FIRST_BACKOFF_S
    max_s: float = MAX_BACKOFF_S
    failures_in_a_row: int = 0
    paused_until: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def delay(self, attempts: int) -> float:
        ceiling = min(self.max_s, self.first_s * 2 ** max(0, attempts - 1))
        return ceiling * random.uniform(0.5, 1.0)

    def failed(self, delay_s: float) -> None:
        with self.lock:
            self.failures_in_a_row += 1
            self.paused_until = max(self.paused_until, time.monotonic() + delay_s)

    def succeeded(self) -> None:
        with self.lock:
            self.failures_in_a_row = 0

    def pause_left(self) -> float:
        return max(0.0, self.paused_until - time.monotonic())


class _BoundedCurl:
    """A pycurl handle that keeps our timeouts: `stripe.PycurlClient` sets 30 s to connect and
    80 s in all before every request, longer than a fetch may hold one of the fetch threads."""

    def __init__(self, handle: Any, timeout_s: float) -> None:
        self._handle = handle
        self._timeout_s = max(1, int(timeout_s))

    def setopt(self, option: int, value: Any) -> None:
        if option in (pycurl.CONNECTTIMEOUT, pycurl.TIMEOUT):
            value = min(value, self._timeout_s)
        self._handle.setopt(option, value)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)


class _CurlClient(stripe.PycurlClient):
    """The library's pycurl client with our timeout, reading the answer's headers itself."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__()
        self._curl = _BoundedCurl(self._curl, timeout_s)

    def parse_headers(self, data: str) -> dict[str, str]:
        """The first header block, names lower-cased, as the library's own method gives it;
        that one runs the e-mail parser, a fifth of a fetch's CPU under cProfile."""
        headers: dict[str, str] = {}
        for line in data.split("\r\n")[1:]:  # after the status line
            if not line:
                break
            name, colon, value = line.partition(":")
            if colon:
                headers.setdefault(name.strip().lower(), value.strip())  # the first, as there
        return headers


def fetching_client(settings: Settings) -> stripe.StripeClient:
    """A client that does not retry by itself: every attempt goes through the pacer.

    Its HTTP client is the library's `PycurlClient`, whose handle keeps its connection to
    Stripe open: a fetch cost 1.95 ms of CPU through `HTTPXClient` and 0.95 ms through it
    (`python -m bench.resolver_cpu --http-floor`, docs/performance.md). A handle serves one
    thread at a time: each fetch thread has its own client (`FetchingClients`).
    """
    return stripe.StripeClient(
        settings.api_key(),
        base_addresses={"api": settings.stripe_api_base},
        max_network_retries=0,
        http_client=_CurlClient(FETCH_TIMEOUT_S),
    )


class FetchingClients:
    """A fetching client per thread, made on the thread's first fetch."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._local = threading.local()

    def get(self) -> stripe.StripeClient:
        client: stripe.StripeClient | None = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = fetching_client(self._settings)
        return client


def fetch_object(client: stripe.StripeClient, event: Pending, backoff: Backoff) -> dict[str, Any]:
    """The event's object as plain JSON, read through the official library; Retry or NotFound.

    The request is the one `fetch_related_object()` makes (the notification's URL, its
    `Stripe-Context`, the same trigger header), through the library's `raw_request` with its
    errors; the answer is taken as the JSON it is, which is what the handlers read from a
    snapshot webhook too. Building the library's objects from it and turning them back into
    a dict cost 0.4 times as much CPU as the request itself (docs/performance.md, the
    resolver's CPU).
    """
    try:
        response = client.raw_request(
            "get",
            event.url,
            stripe_context=event.thin.context,
            headers={"Stripe-Request-Trigger": f"event={event.id}"},
            usage=["fetch_related_object"],
        )
        obj = response.data
        if not isinstance(obj, dict):
            raise ValueError(f"Stripe's answer for {event.url} is not an object")
        return obj
    except stripe.RateLimitError as exc:
        headers = {str(k).lower(): str(v) for k, v in (exc.headers or {}).items()}
        attempts = event.attempts + backoff.failures_in_a_row
        delay = backoff.delay(attempts)
        if headers.get("stripe-should-retry") == "false":
            delay = backoff.max_s  # Stripe says retrying soon will not help
        elif headers.get("retry-after", "").isdigit():
            delay = max(delay, float(headers["retry-after"]))
        raise Retry(RATE_LIMITED, delay, failed_request=True) from None
    except (stripe.AuthenticationError, stripe.PermissionError) as exc:
        reason = KEY_REFUSED.format(status=exc.http_status)
        raise Retry(reason, KEY_REFUSED_RETRY_S, failed_request=True) from None
    except stripe.APIConnectionError as exc:
        detail = str(exc.user_message or exc).splitlines()[0][:200]
        delay = backoff.delay(event.attempts + backoff.failures_in_a_row)
        raise Retry(UNREACHABLE.format(detail=detail), delay, failed_request=True) from None
    except stripe.StripeError as exc:
        if exc.http_status == 404:
            raise NotFound from None
        if exc.http_status is not None and exc.http_status >= 500:
            delay = backoff.delay(event.attempts + backoff.failures_in_a_row)
            reason = STRIPE_ERROR.format(status=exc.http_status)
            raise Retry(reason, delay, failed_request=True) from None
        raise
