"""GET subscription-trends over real HTTP: the daily history dated by Stripe, per SPEC 16."""

import json
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import Engine

from finance_core.views.queries import plan_id_for
from tests.conftest import deliver
from tests.support import stripe_factory as sf
from tests.support.api import assert_error, bearer, make_token, parse_utc, read
from webhook_listener.api_models import SubscriptionTrendsEnvelope

TRENDS = "/api/v1/platform/finance/subscription-trends"


def dated(sub_id, status, product, *, start, canceled=None):
    obj = sf.subscription(sub_id, status, product)
    obj.update(created=int(start.timestamp()), start_date=int(start.timestamp()))
    if canceled is not None:
        obj.update(canceled_at=int(canceled.timestamp()), ended_at=int(canceled.timestamp()))
    return obj


@pytest.fixture
def token(engine: Engine) -> str:
    return make_token(engine, "finance")


def test_trends_are_dated_by_stripe_a_day_per_entry_and_a_week_per_iso_week(http, token):
    now = datetime.now(UTC)
    today = now.date()
    ago = lambda days: now - timedelta(days=days)  # noqa: E731
    for event in [
        sf.event("product.created", sf.product("prod_pro", "<a href='x'>Pro</a>")),
        sf.event(
            "customer.subscription.created", dated("sub_a", "active", "prod_pro", start=ago(100))
        ),
        sf.event(
            "customer.subscription.deleted",
            dated("sub_b", "canceled", "prod_pro", start=ago(50), canceled=ago(10)),
        ),
        sf.event(
            "customer.subscription.created", dated("sub_c", "trialing", "prod_x", start=ago(3))
        ),
    ]:
        assert deliver(http, event).status_code == 200

    data = read(http, f"{TRENDS}?days=30", token)
    assert set(data) == {"days", "observed_since", "as_of", "daily", "weekly"}
    assert data["days"] == 30
    assert parse_utc(data["as_of"]) <= datetime.now(UTC)
    observed = date.fromisoformat(data["observed_since"])
    assert observed == today  # a fresh store observes from the day it was created
    days = [date.fromisoformat(day["date"]) for day in data["daily"]]
    assert days == [today - timedelta(days=n) for n in range(29, -1, -1)]
    assert [day["reconstructed"] for day in data["daily"]] == [d < observed for d in days]

    pro = {"plan_id": str(plan_id_for("prod_pro")), "plan_name": "<a href='x'>Pro</a>"}
    x = {"plan_id": str(plan_id_for("prod_x")), "plan_name": "prod_x"}
    by_day = {date.fromisoformat(day["date"]): day["plans"] for day in data["daily"]}
    # Active from each one's own start until it ended; a plan shows from its first one.
    assert by_day[today - timedelta(days=20)] == [{**pro, "active": 2}]
    assert by_day[today - timedelta(days=5)] == [{**pro, "active": 1}]
    assert sorted(by_day[today], key=lambda p: p["plan_name"]) == [
        {**pro, "active": 1},
        {**x, "active": 1},
    ]

    mondays = [date.fromisoformat(week["week_of"]) for week in data["weekly"]]
    first = days[0] - timedelta(days=days[0].weekday())
    assert mondays == [first + timedelta(weeks=n) for n in range(len(mondays))]
    assert mondays[-1] == today - timedelta(days=today.weekday())
    week = {
        monday: (w["new"], w["canceled"]) for monday, w in zip(mondays, data["weekly"], strict=True)
    }

    def monday_of(moment):
        return moment.date() - timedelta(days=moment.date().weekday())

    assert week[monday_of(ago(3))][0] == 1  # sub_c, on its start date
    assert week[monday_of(ago(10))][1] == 1  # sub_b, on its cancel date
    assert sum(n for n, _ in week.values()) == 1 and sum(c for _, c in week.values()) == 1

    year = read(http, f"{TRENDS}?days=365", token)
    assert len(year["daily"]) == 365
    by_day = {date.fromisoformat(day["date"]): day["plans"] for day in year["daily"]}
    assert by_day[today - timedelta(days=101)] == []  # before the first subscription
    assert by_day[today - timedelta(days=99)] == [{**pro, "active": 1}]
    assert sum(w["new"] for w in year["weekly"]) == 3
    assert len(read(http, TRENDS, token)["daily"]) == 90  # the default window


def test_the_answer_is_the_documented_model_and_carries_the_rate_limit(http, token):
    """The answer is built from plain values for speed: it must still be the models' shape."""
    sub = dated("sub_a", "active", "prod_pro", start=datetime.now(UTC) - timedelta(days=40))
    assert deliver(http, sf.event("customer.subscription.created", sub)).status_code == 200
    for days in (30, 365):
        first = http.get(f"{TRENDS}?days={days}", headers=bearer(token))
        second = http.get(f"{TRENDS}?days={days}", headers=bearer(token))
        assert first.status_code == second.status_code == 200
        answer = SubscriptionTrendsEnvelope.model_validate_json(first.content)
        assert json.loads(first.content) == answer.model_dump(mode="json")
        assert answer.data.days == days and len(answer.data.daily) == days
        active_days = min(days, 40 + 1)  # from its start day to today
        assert sum(len(day.plans) for day in answer.data.daily) == active_days
        assert first.headers["content-type"] == "application/json"
        assert first.headers["X-RateLimit-Limit"] == "100"
        remaining = int(first.headers["X-RateLimit-Remaining"])
        assert int(second.headers["X-RateLimit-Remaining"]) == remaining - 1
        assert "app;dur=" in first.headers["Server-Timing"]


@pytest.mark.parametrize(
    "query", ["days=7", "days=thirty", "days=", "days=30&days=90", "days=30&plan=pro", "x=1"]
)
def test_other_windows_and_unknown_parameters_are_400(http, token, query):
    response = http.get(f"{TRENDS}?{query}", headers=bearer(token))
    assert_error(response, 400, "invalid_parameters")
    assert "X-RateLimit-Remaining" in response.headers


def test_trends_take_the_same_tokens_and_roles(http, engine):
    response = http.get(f"{TRENDS}?days=30")
    assert_error(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    # A caller without a token learns nothing about the parameters either.
    assert_error(http.get(f"{TRENDS}?days=7"), 401, "unauthorized")
    response = http.get(f"{TRENDS}?days=30", headers=bearer(make_token(engine, "support")))
    assert_error(response, 403, "forbidden")
    read(http, f"{TRENDS}?days=30", make_token(engine, "admin"))


def test_the_openapi_document_describes_the_trends(http):
    operation = http.get("/openapi.json").json()["paths"][TRENDS]["get"]
    (days,) = operation["parameters"]
    assert days["name"] == "days" and days["schema"]["enum"] == [30, 90, 365]
    assert {"200", "400", "401", "403", "429"} <= set(operation["responses"])
