"""The Finance API's JSON shapes (SPEC 6), as pydantic models that also write its OpenAPI."""

from datetime import UTC, datetime
from datetime import date as Day
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, WithJsonSchema
from pydantic_core import to_json

from finance_core.views.payments import FailedPayments, cursor_token
from finance_core.views.queries import SubscriptionSummary, SyncStatus, WebhookHealth
from finance_core.views.trends import WINDOWS, SubscriptionTrends

UTC_SECOND_PATTERN = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$"


def utc_second(moment: datetime) -> str:
    """UTC ISO 8601 with a Z suffix, to the second: 2025-12-04T12:05:00Z."""
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    # isoformat, cheaper than strftime: a page of 500 invoices formats 1,000 moments.
    return aware.astimezone(UTC).replace(tzinfo=None, microsecond=0).isoformat() + "Z"


UtcSecond = Annotated[
    datetime,
    PlainSerializer(utc_second, return_type=str),
    WithJsonSchema(
        {
            "type": "string",
            "format": "date-time",
            "pattern": UTC_SECOND_PATTERN,
            "examples": ["2025-12-04T12:05:00Z"],
        }
    ),
]


class ApiModel(BaseModel):
    # `success` has a default, yet every answer carries it: document it as required.
    model_config = ConfigDict(json_schema_serialization_defaults_required=True)


class ErrorDetail(ApiModel):
    code: str = Field(examples=["unauthorized"])
    message: str = Field(examples=["the bearer token is unknown or revoked"])


class ErrorEnvelope(ApiModel):
    """Every error answer of the Finance API."""

    success: Literal[False] = False
    error: ErrorDetail


class PlanShare(ApiModel):
    plan_id: UUID = Field(description="Stable id of the plan (one Stripe product)")
    plan_name: str = Field(description="The product's name, or its id until the name is known")
    count: int = Field(ge=1, description="Active subscriptions on this plan")


class SubscriptionSummaryData(ApiModel):
    active_subscriptions: int = Field(ge=0)
    plan_distribution: list[PlanShare] = Field(
        description="Exactly the active subscriptions, largest count first"
    )
    stripe_dashboard_url: str = Field(examples=["https://dashboard.stripe.com/revenue"])
    as_of: UtcSecond

    @classmethod
    def of(cls, summary: SubscriptionSummary) -> "SubscriptionSummaryData":
        return cls(
            active_subscriptions=summary.active_subscriptions,
            plan_distribution=[
                PlanShare(plan_id=plan.plan_id, plan_name=plan.plan_name, count=plan.count)
                for plan in summary.plan_distribution
            ],
            stripe_dashboard_url=summary.stripe_dashboard_url,
            as_of=summary.as_of,
        )


class SubscriptionSummaryEnvelope(ApiModel):
    success: Literal[True] = True
    data: SubscriptionSummaryData


class LastWebhookEvent(ApiModel):
    id: str = Field(examples=["evt_abc123"])
    type: str = Field(examples=["invoice.paid"])
    timestamp: UtcSecond = Field(description="The event's `created` time")


class StripeSyncStatusData(ApiModel):
    last_webhook_received: UtcSecond | None = Field(
        description="Arrival of the latest verified delivery; null before the first webhook"
    )
    webhook_health: WebhookHealth
    failed_payments_count: int = Field(ge=0)
    last_webhook_event: LastWebhookEvent | None = Field(
        description="The event of that delivery; null before the first webhook"
    )
    stripe_dashboard_url: str = Field(examples=["https://dashboard.stripe.com/payments"])

    @classmethod
    def of(cls, status: SyncStatus) -> "StripeSyncStatusData":
        last = status.last_event
        return cls(
            last_webhook_received=status.last_webhook_received,
            webhook_health=status.webhook_health,
            failed_payments_count=status.failed_payments_count,
            last_webhook_event=(
                LastWebhookEvent(id=last.id, type=last.type, timestamp=last.created)
                if last
                else None
            ),
            stripe_dashboard_url=status.stripe_dashboard_url,
        )


class StripeSyncStatusEnvelope(ApiModel):
    success: Literal[True] = True
    data: StripeSyncStatusData


# --- failed payments (SPEC 16): the Payments page's rows, totals and Recovered ----------


class FailingInvoiceItem(ApiModel):
    id: str = Field(examples=["in_1"])
    customer: str | None = Field(description="The Stripe customer id", examples=["cus_1"])
    subscription: str | None = Field(examples=["sub_1"])
    plan_id: UUID | None = Field(
        description="The plan of the invoice itself (its first line's product; its "
        "subscription's when it names none); null when neither is known"
    )
    plan_name: str | None = Field(examples=["Pro"])
    amount_due: int | None = Field(description="In the currency's minor unit", examples=[2900])
    currency: str | None = Field(examples=["usd"])
    attempts: int | None = Field(ge=0, description="Payment attempts so far")
    next_retry: UtcSecond | None = Field(
        description="When Stripe retries next; null when Stripe plans no more retries"
    )
    failing_since: UtcSecond = Field(description="When the current run of failures began")
    stripe_url: str = Field(examples=["https://dashboard.stripe.com/invoices/in_1"])


class FailingCurrencyTotal(ApiModel):
    currency: str | None = Field(examples=["usd"])
    invoices: int = Field(ge=1)
    amount_due: int = Field(ge=0, description="In the currency's minor unit")


class RecoveredCurrencyTotal(ApiModel):
    currency: str | None = Field(examples=["usd"])
    invoices: int = Field(ge=1)
    amount_paid: int = Field(ge=0, description="In the currency's minor unit")


class RecoveredData(ApiModel):
    days: int = Field(description="The window: the last 7, 30 or 90 days", examples=[30])
    totals: list[RecoveredCurrencyTotal] = Field(
        description="Invoices that were failing and were paid in the window, per currency"
    )
    recovery_rate: float | None = Field(
        ge=0,
        le=1,
        description="Of the invoices that started failing in the window and have closed since, "
        "the share closed by payment; null when none has closed",
    )


class FailedPaymentsData(ApiModel):
    as_of: UtcSecond
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null on the last page"
    )
    invoices: list[FailingInvoiceItem] = Field(description="Newest failure first")
    totals: list[FailingCurrencyTotal] = Field(
        description="Every failing invoice (not only this page's), per currency"
    )
    recovered: RecoveredData


class FailedPaymentsEnvelope(ApiModel):
    success: Literal[True] = True
    data: FailedPaymentsData


def failed_payments_json(answer: FailedPayments) -> bytes:
    """The answer of FailedPaymentsEnvelope's shape as JSON, built from plain values.

    A page of 500 invoices took 5.8 ms as model objects, 2.8 ms as plain values and one Rust
    serialization (docs/performance.md, "Both SPEC 16 endpoints at 1,000,000 subscriptions").
    The models above stay the documented shape; the tests read answers back through them.
    """
    page, recovered = answer.page, answer.recovered

    def moment(value: datetime | None) -> str | None:
        return None if value is None else utc_second(value)

    invoices = [
        {
            "id": row.id,
            "customer": row.customer_id,
            "subscription": row.subscription_id,
            "plan_id": row.plan_id,
            "plan_name": row.plan_name,
            "amount_due": row.amount_due,
            "currency": row.currency,
            "attempts": row.attempts,
            "next_retry": moment(row.next_retry),
            "failing_since": utc_second(row.failing_since),
            "stripe_url": row.stripe_url,
        }
        for row in page.rows
    ]
    data = {
        "as_of": utc_second(answer.as_of),
        "next_cursor": cursor_token(page.next_cursor) if page.next_cursor else None,
        "invoices": invoices,
        "totals": [
            {"currency": total.currency, "invoices": total.invoices, "amount_due": total.amount_due}
            for total in answer.totals
        ],
        "recovered": {
            "days": recovered.days,
            "totals": [
                {
                    "currency": total.currency,
                    "invoices": total.invoices,
                    "amount_paid": total.amount_paid,
                }
                for total in recovered.totals
            ],
            "recovery_rate": recovered.recovery_rate,
        },
    }
    return to_json({"success": True, "data": data})


def _query_parameter(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


# Documented here, read by the route itself after the token check (webhook_listener.api).
FAILED_PAYMENTS_PARAMETERS = [
    _query_parameter(
        "limit",
        "Invoices per page",
        {"type": "integer", "minimum": 1, "maximum": 500, "default": 50},
    ),
    _query_parameter(
        "cursor",
        "The `next_cursor` of the previous page (opaque)",
        {"type": "string", "minLength": 1, "maxLength": 1000},
    ),
    _query_parameter(
        "recovered_days",
        "The window of `recovered`, in days",
        {"type": "integer", "enum": [7, 30, 90], "default": 30},
    ),
]


# --- subscription-trends (SPEC 16) -------------------------------------------------------

TrendWindow = Literal[30, 90, 365]
assert WINDOWS == (30, 90, 365)  # the Literal above spells finance_core's windows


class TrendPlan(ApiModel):
    plan_id: UUID = Field(description="Stable id of the plan (one Stripe product)")
    plan_name: str = Field(description="The product's name, or its id until the name is known")
    active: int = Field(ge=1, description="Active subscriptions on this plan at the day's end")


class TrendDay(ApiModel):
    date: Day = Field(description="A UTC day", examples=["2025-12-05"])
    reconstructed: bool = Field(
        description="Before `observed_since`: rebuilt from Stripe's start and cancel dates, "
        "whether a subscription was trialing or past due then is not known"
    )
    plans: list[TrendPlan] = Field(description="Every plan active that day, by plan name")


class TrendWeek(ApiModel):
    week_of: Day = Field(description="The Monday (UTC) of an ISO week", examples=["2025-12-01"])
    new: int = Field(ge=0, description="Subscriptions whose Stripe start date is in the week")
    canceled: int = Field(ge=0, description="Subscriptions canceled (Stripe's date) in the week")


class SubscriptionTrendsData(ApiModel):
    days: TrendWindow
    observed_since: Day = Field(
        description="The first UTC day the store observed; earlier days are reconstructed"
    )
    as_of: UtcSecond
    daily: list[TrendDay] = Field(description="One entry per day of the window, oldest first")
    weekly: list[TrendWeek] = Field(
        description="Every ISO week that has a day in the window, oldest first"
    )


class SubscriptionTrendsEnvelope(ApiModel):
    success: Literal[True] = True
    data: SubscriptionTrendsData


def subscription_trends_json(trends: SubscriptionTrends) -> bytes:
    """The answer of SubscriptionTrendsEnvelope's shape as JSON, built from plain values.

    A year of 20 plans is 7,300 entries: a model object per entry cost 12.1 ms per answer,
    plain values and one Rust serialization 2.8 ms (docs/performance.md, "Both SPEC 16
    endpoints at 1,000,000 subscriptions"). The models above stay the documented shape; the
    tests read every answer back through them.
    """
    plans = [(str(plan.plan_id), plan.plan_name, plan.counts) for plan in trends.per_plan]
    daily = [
        {
            "date": day.isoformat(),
            "reconstructed": trends.reconstructed(day),
            "plans": [
                {"plan_id": plan_id, "plan_name": name, "active": counts[n]}
                for plan_id, name, counts in plans
                if counts[n]
            ],
        }
        for n, day in enumerate(trends.window)
    ]
    weekly = [
        {
            "week_of": week.week.isoformat(),
            "new": week.new_subscriptions,
            "canceled": week.cancellations,
        }
        for week in trends.weekly
    ]
    data = {
        "days": trends.days,
        "observed_since": trends.observed_since.isoformat(),
        "as_of": utc_second(trends.as_of),
        "daily": daily,
        "weekly": weekly,
    }
    return to_json({"success": True, "data": data})


# The query parameter, described here and checked by the route after the token (so that a
# caller without a token learns nothing, and a 400 carries the rate-limit headers).
TRENDS_PARAMETERS: list[dict[str, Any]] = [
    {
        "name": "days",
        "in": "query",
        "required": False,
        "description": "The window: the last 30, 90 or 365 UTC days, today included",
        "schema": {"type": "integer", "enum": list(WINDOWS), "default": 90},
    }
]

# --- end of subscription-trends -----------------------------------------------------------


def _header(description: str, *, required: bool = True) -> dict[str, Any]:
    schema = {"type": "integer", "minimum": 0}
    return {"description": description, "required": required, "schema": schema}


def _rate_headers(*, required: bool) -> dict[str, Any]:
    return {
        "X-RateLimit-Limit": _header(
            "Requests allowed per period to this token", required=required
        ),
        "X-RateLimit-Remaining": _header("Requests left in the current period", required=required),
    }


def _error(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"model": ErrorEnvelope, "description": description, "headers": headers or {}}


# What each status means and which headers it carries; every route of the API shares these.
RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"headers": _rate_headers(required=True)},
    400: _error(
        "Unknown or invalid query parameters (the summary and the sync status take none; "
        "subscription-trends takes `days`, failed-payments `limit`, `cursor` and "
        "`recovered_days`)",
        _rate_headers(required=True),
    ),
    401: _error(
        "Missing, malformed, unknown or revoked bearer token",
        {
            "WWW-Authenticate": {
                "description": "The authentication scheme to use",
                "required": True,
                "schema": {"type": "string", "pattern": "^Bearer"},
            }
        },
    ),
    403: _error(
        "The token has neither the finance nor the admin role", _rate_headers(required=True)
    ),
    429: _error(
        "Over FINANCE_API_RATE_LIMIT for this token (with X-RateLimit-*), or too many failed "
        "authentications from this client address (without them)",
        {
            "Retry-After": _header("Seconds to wait before the next attempt"),
            **_rate_headers(required=False),
        },
    ),
    500: _error("An unexpected error; the details are in the listener's log"),
    503: _error(
        "The database (`database_unavailable`) or the rate limit storage "
        "(`rate_limit_unavailable`) cannot be reached; retry shortly",
        {"Retry-After": _header("Seconds to wait before retrying")},
    ),
}
