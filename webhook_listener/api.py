"""The Finance API (SPEC 6, 16): read-only endpoints over `finance_core.views`, behind tokens.

Each answer is one trip to the thread pool: the token check, the rate limit and the query run
there together, never on the event loop. (A plain `def` route with a `def` dependency would
take three: the dependency, the route, then FastAPI's validation of the returned model.)

The token is one statement and the answer another, each its own snapshot, outside a
transaction: on PostgreSQL two round trips after the pool's ping, and no BEGIN or COMMIT.
"""

import logging
import re
import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from limits.errors import StorageError
from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from finance_core.access.roles import can_read
from finance_core.access.tokens import TokenInfo, find_token, record_use
from finance_core.settings import Settings
from finance_core.store.db import is_unavailable, statement_reads
from finance_core.views.payments import (
    MAX_PAGE_SIZE,
    BadCursor,
    Cursor,
    failed_payments,
    parse_cursor_token,
)
from finance_core.views.queries import stripe_sync_status, subscription_summary
from finance_core.views.recovery import DEFAULT_RECOVERED_DAYS, RECOVERED_WINDOWS
from finance_core.views.trends import WINDOWS, subscription_trends
from webhook_listener.api_errors import API_PREFIX, ApiError, install_error_handlers
from webhook_listener.api_models import (
    FAILED_PAYMENTS_PARAMETERS,
    RESPONSES,
    TRENDS_PARAMETERS,
    FailedPaymentsEnvelope,
    StripeSyncStatusData,
    StripeSyncStatusEnvelope,
    SubscriptionSummaryData,
    SubscriptionSummaryEnvelope,
    SubscriptionTrendsEnvelope,
    failed_payments_json,
    subscription_trends_json,
)
from webhook_listener.ratelimit import RateLimits
from webhook_listener.webhook import Receive, Scope, Send

log = logging.getLogger("webhook_listener.api")
T = TypeVar("T")
RETRY_UNAVAILABLE_SECONDS = 5

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="FinanceToken",
    bearerFormat="pmf_<id>_<secret>",
    description="A token from `python -m finance_core token create NAME --role finance`.",
)
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def authenticated(
    request: Request, credentials: HTTPAuthorizationCredentials | None, conn: Connection
) -> TokenInfo:
    """The live token the caller sent, read in `conn`, or the 401 (or 429) that says why not."""
    rate_limits: RateLimits = request.app.state.rate_limits
    token = None
    if credentials is not None:
        token = find_token(conn=conn, token=credentials.credentials)
    if token is None:
        raise _unauthenticated(request, rate_limits, credentials)
    return token


def no_query(request: Request) -> str | None:
    """What is wrong with the query string of an endpoint that takes none, if anything."""
    return _query_problem(request) if request.scope["query_string"] else None


def own_query(request: Request) -> None:
    """For an endpoint that reads its query parameters itself, after the token check."""
    return None


def authorize(
    request: Request,
    response: Response,
    token: TokenInfo,
    query_problem: Callable[[Request], str | None] = no_query,
) -> None:
    """Let a token with a reading role through, within its rate limit, or raise why not."""
    state = request.app.state
    rate_limits: RateLimits = state.rate_limits
    decision = rate_limits.hit_token(token.id)
    headers = decision.headers()
    if not decision.allowed:
        settings: Settings = state.settings
        raise ApiError(
            429,
            "rate_limited",
            f"this token is over its limit of {settings.finance_api_rate_limit}; "
            f"retry in {decision.retry_after} seconds",
            {**headers, "Retry-After": str(decision.retry_after)},
        )
    if not can_read(token.roles):
        message = "this token has neither the finance nor the admin role"
        raise ApiError(403, "forbidden", message, headers)
    problem = query_problem(request)
    if problem is not None:
        raise ApiError(400, "invalid_parameters", problem, headers)
    response.headers.update(headers)


def _unauthenticated(
    request: Request, rate_limits: RateLimits, credentials: HTTPAuthorizationCredentials | None
) -> ApiError:
    """A 401 that says what was wrong, or a 429 once this address has failed too often."""
    address = request.client.host if request.client else "unknown"
    decision = rate_limits.hit_failed_auth(address)
    if not decision.allowed:
        return ApiError(
            429,
            "too_many_failed_attempts",
            f"too many failed authentications from this address; retry in "
            f"{decision.retry_after} seconds",
            {"Retry-After": str(decision.retry_after)},
        )
    if credentials is not None:
        message = "the bearer token is unknown or revoked"
        challenge = 'Bearer error="invalid_token"'
    elif "authorization" in request.headers:
        message, challenge = "the Authorization header is not 'Bearer <token>'", "Bearer"
    else:
        message, challenge = "send an API token as 'Authorization: Bearer <token>'", "Bearer"
    return ApiError(401, "unauthorized", message, {"WWW-Authenticate": challenge})


def _query_problem(request: Request) -> str:
    names = sorted({name for name in request.query_params if name})
    listed = f": {', '.join(names)}"[:200] if names else ""
    return f"this endpoint takes no query parameters{listed}"


router = APIRouter(prefix=API_PREFIX, tags=["finance"], responses=RESPONSES)


@router.get("/subscription-summary", summary="Active subscriptions and their plans")
async def get_subscription_summary(
    request: Request, response: Response, credentials: Credentials
) -> SubscriptionSummaryEnvelope:
    """Active subscriptions and their distribution over plans, largest first."""
    return await _answer(request, response, credentials, _subscription_summary)


@router.get("/stripe-sync-status", summary="Webhook feed health and failing payments")
async def get_stripe_sync_status(
    request: Request, response: Response, credentials: Credentials
) -> StripeSyncStatusEnvelope:
    """How healthy the Stripe webhook feed is, its latest event and the failing payments."""
    return await _answer(request, response, credentials, _stripe_sync_status)


async def _answer(
    request: Request,
    response: Response,
    credentials: HTTPAuthorizationCredentials | None,
    read: Callable[[Connection, Settings], T],
    query_problem: Callable[[Request], str | None] = no_query,
) -> T:
    """Check the caller and `read` the answer, on one connection, on the thread pool.

    A store that cannot be reached (the database, or Redis behind the rate limit) is a 503
    that says which and invites a retry, not an internal error.
    """
    state = request.app.state
    if not state.store.ready:  # the database has not answered since the listener started
        raise _unavailable("database_unavailable", "the database")

    def checked_read() -> T:
        token = None
        try:
            with statement_reads(state.engine) as conn:
                token = authenticated(request, credentials, conn)
                authorize(request, response, token, query_problem)
                return read(conn, state.settings)
        finally:
            if token is not None:  # with the connection back in the pool
                record_use(engine=state.engine, token=token, now=datetime.now(UTC))

    try:
        return await run_in_threadpool(checked_read)
    except SQLAlchemyError as exc:
        if not is_unavailable(exc):
            raise  # a 500: a bug or a wrong schema, not an outage
        log.exception("the database is unreachable or busy")
        raise _unavailable("database_unavailable", "the database") from None
    except StorageError:
        log.exception("the rate limit storage is unreachable")
        raise _unavailable("rate_limit_unavailable", "the rate limit storage") from None


def _json_answer(body: bytes, response: Response) -> Response:
    """An answer serialized already (a large one: see api_models), with `response`'s headers.

    FastAPI adds the injected `response`'s headers (the rate limit's) only to answers it
    serializes itself: a Response returned whole carries them over here.
    """
    headers = {
        name: value
        for name, value in response.headers.items()
        if name not in {"content-length", "content-type"}
    }
    return Response(body, media_type="application/json", headers=headers)


def _unavailable(code: str, what: str) -> ApiError:
    message = f"{what} cannot be reached right now; retry shortly"
    return ApiError(503, code, message, {"Retry-After": str(RETRY_UNAVAILABLE_SECONDS)})


def _subscription_summary(conn: Connection, settings: Settings) -> SubscriptionSummaryEnvelope:
    summary = subscription_summary(
        conn=conn, active_statuses=settings.active_subscription_statuses, now=datetime.now(UTC)
    )
    return SubscriptionSummaryEnvelope(data=SubscriptionSummaryData.of(summary))


def _stripe_sync_status(conn: Connection, settings: Settings) -> StripeSyncStatusEnvelope:
    status = stripe_sync_status(
        conn=conn, delayed_after=settings.webhook_delayed_after, now=datetime.now(UTC)
    )
    return StripeSyncStatusEnvelope(data=StripeSyncStatusData.of(status))


# --- failed payments (SPEC 16) ---------------------------------------------------------

FAILED_PAYMENTS_DEFAULT_LIMIT = 50
RATE_HEADERS = ("X-RateLimit-Limit", "X-RateLimit-Remaining")
_SMALL_NUMBER = re.compile(r"^[0-9]{1,4}$")


@dataclass(frozen=True, slots=True)
class FailedPaymentsQuery:
    limit: int
    after: Cursor | None
    recovered_days: int


@router.get(
    "/failed-payments",
    summary="Failing invoices for collections, and what was recovered",
    response_model=FailedPaymentsEnvelope,
    openapi_extra={"parameters": FAILED_PAYMENTS_PARAMETERS},
)
async def get_failed_payments(
    request: Request, response: Response, credentials: Credentials
) -> Response:
    """The Payments page's rows in keyset pages (newest failure first, amounts in minor
    units), the totals per currency of every failing invoice, and the invoices recovered in
    the last `recovered_days` days with that window's recovery rate."""

    def read(conn: Connection, settings: Settings) -> bytes:
        query = _failed_payments_query(request, response)
        answer = failed_payments(
            conn,
            limit=query.limit,
            after=query.after,
            recovered_days=query.recovered_days,
            now=datetime.now(UTC),
        )
        return failed_payments_json(answer)

    body = await _answer(request, response, credentials, read, own_query)
    return _json_answer(body, response)


def _failed_payments_query(request: Request, response: Response) -> FailedPaymentsQuery:
    """The query parameters, or the 400 that names what is wrong (with the rate headers)."""

    def invalid(message: str) -> ApiError:
        sent = response.headers
        headers = {name: sent[name] for name in RATE_HEADERS if name in sent}
        return ApiError(400, "invalid_parameters", message, headers)

    params = request.query_params
    unknown = sorted(set(params) - {"limit", "cursor", "recovered_days"})
    if unknown:
        raise invalid(f"unknown query parameters: {', '.join(unknown)}"[:200])
    if any(len(params.getlist(name)) > 1 for name in params):
        raise invalid("each query parameter may be given once")
    limit = FAILED_PAYMENTS_DEFAULT_LIMIT
    if "limit" in params:
        text = params["limit"]
        if not _SMALL_NUMBER.match(text) or not 1 <= int(text) <= MAX_PAGE_SIZE:
            raise invalid(f"limit must be a whole number from 1 to {MAX_PAGE_SIZE}")
        limit = int(text)
    after = None
    if "cursor" in params:
        try:
            after = parse_cursor_token(params["cursor"])
        except BadCursor as exc:
            raise invalid(str(exc)) from None
    days = DEFAULT_RECOVERED_DAYS
    if "recovered_days" in params:
        text = params["recovered_days"]
        windows = ", ".join(str(window) for window in RECOVERED_WINDOWS)
        if not _SMALL_NUMBER.match(text) or int(text) not in RECOVERED_WINDOWS:
            raise invalid(f"recovered_days must be one of {windows}")
        days = int(text)
    return FailedPaymentsQuery(limit, after, days)


# --- subscription-trends (SPEC 16) -------------------------------------------------------

TRENDS_DEFAULT_DAYS = 90


def _trend_days(request: Request) -> int | None:
    """`days` as given (30, 90 or 365), the default when absent, None when it is wrong."""
    params = request.query_params
    if set(params) - {"days"} or len(params.getlist("days")) > 1:
        return None
    value = params.get("days")
    if value is None:
        return TRENDS_DEFAULT_DAYS
    return int(value) if value in {str(n) for n in WINDOWS} else None


def _trends_query_problem(request: Request) -> str | None:
    if _trend_days(request) is not None:
        return None
    names = sorted({name for name in request.query_params if name and name != "days"})
    unknown = f"; unknown: {', '.join(names)}"[:200] if names else ""
    return f"days is one of 30, 90 or 365{unknown}"


@router.get(
    "/subscription-trends",
    summary="Active subscriptions per plan per day, new and canceled per week",
    response_model=SubscriptionTrendsEnvelope,
    openapi_extra={"parameters": TRENDS_PARAMETERS},
)
async def get_subscription_trends(
    request: Request, response: Response, credentials: Credentials
) -> Response:
    """The daily history dated by Stripe: per UTC day and plan the active subscriptions (days
    before `observed_since` reconstructed from Stripe's dates), per ISO week the subscriptions
    that started and were canceled. The Trends page's numbers."""

    def read(conn: Connection, settings: Settings) -> bytes:
        days = _trend_days(request)
        assert days is not None  # checked with the token
        trends = subscription_trends(
            conn=conn,
            active_statuses=settings.active_subscription_statuses,
            days=days,
            now=datetime.now(UTC),
        )
        return subscription_trends_json(trends)

    body = await _answer(request, response, credentials, read, _trends_query_problem)
    return _json_answer(body, response)


# --- end of subscription-trends -----------------------------------------------------------


class ServerTiming:
    """`Server-Timing: app;dur=<ms>` on every answer FastAPI serves (the API and /healthz).

    The time from the request reaching the app to its response headers: routing, auth, rate
    limit, query and serialization, without the network, so clients and benchmarks can tell
    the server's share of a latency from the transport's.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()

        async def timed_send(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                duration_ms = (time.perf_counter() - started) * 1000
                timing = f"app;dur={duration_ms:.3f}".encode()
                message["headers"] = [*message.get("headers", ()), (b"server-timing", timing)]
            await send(message)

        await self.app(scope, receive, timed_send)


def install_finance_api(app: FastAPI) -> None:
    """Add the Finance API's routes, its error answers and Server-Timing to the listener app."""
    app.include_router(router)
    install_error_handlers(app)
    app.add_middleware(ServerTiming)
