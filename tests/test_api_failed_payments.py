"""GET /failed-payments over real HTTP: the Payments rows from signed webhooks, keyset pages,
Recovered, and the same auth, limits and errors as the other Finance API endpoints."""

import json
import time
from datetime import UTC, datetime

import pytest

from finance_core.views.queries import plan_id_for
from tests.conftest import deliver
from tests.support import stripe_factory as sf
from tests.support.api import FAILED_PAYMENTS, assert_error, bearer, make_token, parse_utc, read
from tests.support.invoices import invoice
from webhook_listener.api_models import FailedPaymentsEnvelope

DAY = 86_400


def send(http, event_type: str, obj: dict, created: int) -> None:
    response = deliver(http, sf.event(event_type, obj, created=created))
    assert response.status_code == 200, response.text


@pytest.fixture
def token(engine) -> str:
    return make_token(engine, "finance")


def test_the_answer_has_the_payments_rows_totals_and_recovered(http, token):
    now = int(time.time())
    send(http, "product.created", sf.product("prod_basic", "Basic"), now - 50 * DAY)
    send(http, "product.created", sf.product("prod_pro", "Pro"), now - 50 * DAY)
    subscription = sf.subscription("sub_1", "active", "prod_basic")
    send(http, "customer.subscription.created", subscription, now - 40 * DAY)
    retry = now + 2 * DAY
    failing = invoice(
        "in_1",
        "open",
        product="prod_basic",
        shape="pricing",
        customer="cus_1",
        next_attempt=retry,
        subscription_id="sub_1",
        attempt_count=2,
    )
    send(http, "invoice.payment_failed", failing, now - 3 * DAY)
    # The subscription moves to Pro afterwards: the invoice stays a Basic one.
    subscription = sf.subscription("sub_1", "active", "prod_pro")
    send(http, "customer.subscription.updated", subscription, now - 2 * DAY)
    stopped = invoice("in_2", "open", customer="cus_2", next_attempt=None, amount_due=1000)
    send(http, "invoice.payment_failed", {**stopped, "currency": "eur"}, now - 1 * DAY)
    for n, (failed, closed, how) in enumerate(
        [(20, 10, "invoice.paid"), (20, 5, "invoice.voided"), (60, 40, "invoice.paid")]
    ):
        send(http, "invoice.payment_failed", invoice(f"in_r{n}", "open"), now - failed * DAY)
        status = "paid" if how == "invoice.paid" else "void"
        send(http, how, invoice(f"in_r{n}", status), now - closed * DAY)

    before = datetime.now(UTC).replace(microsecond=0)
    data = read(http, FAILED_PAYMENTS, token)
    assert before <= parse_utc(data["as_of"]) <= datetime.now(UTC)
    assert data["next_cursor"] is None
    assert data["invoices"] == [
        {
            "id": "in_2",
            "customer": "cus_2",
            "subscription": None,
            "plan_id": None,
            "plan_name": None,
            "amount_due": 1000,
            "currency": "eur",
            "attempts": 1,
            "next_retry": None,
            "failing_since": data["invoices"][0]["failing_since"],
            "stripe_url": "https://dashboard.stripe.com/test/invoices/in_2",
        },
        {
            "id": "in_1",
            "customer": "cus_1",
            "subscription": "sub_1",
            "plan_id": str(plan_id_for("prod_basic")),
            "plan_name": "Basic",
            "amount_due": 2900,
            "currency": "usd",
            "attempts": 2,
            "next_retry": datetime.fromtimestamp(retry, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "failing_since": datetime.fromtimestamp(now - 3 * DAY, UTC).strftime(
                "%Y-%m-%dT%H:%M:%SZ"
            ),
            "stripe_url": "https://dashboard.stripe.com/test/invoices/in_1",
        },
    ]
    assert parse_utc(data["invoices"][0]["failing_since"]).timestamp() == now - DAY
    assert data["totals"] == [
        {"currency": "eur", "invoices": 1, "amount_due": 1000},
        {"currency": "usd", "invoices": 1, "amount_due": 2900},
    ]
    assert data["recovered"] == {
        "days": 30,
        "totals": [{"currency": "usd", "invoices": 1, "amount_paid": 2900}],
        "recovery_rate": 0.5,
    }
    # Built from plain values for speed: exactly what the documented models would write.
    body = http.get(FAILED_PAYMENTS, headers=bearer(token)).content
    documented = FailedPaymentsEnvelope.model_validate_json(body).model_dump(mode="json")
    assert json.loads(body) == documented
    week = read(http, f"{FAILED_PAYMENTS}?recovered_days=7", token)["recovered"]
    assert week == {"days": 7, "totals": [], "recovery_rate": None}
    quarter = read(http, f"{FAILED_PAYMENTS}?recovered_days=90", token)["recovered"]
    assert quarter["totals"] == [{"currency": "usd", "invoices": 2, "amount_paid": 5800}]
    assert quarter["recovery_rate"] == pytest.approx(2 / 3)


def test_keyset_pages_walk_every_failing_invoice_once(http, token):
    now = int(time.time())
    for n in range(7):
        send(http, "invoice.payment_failed", invoice(f"in_{n}", "open"), now - (n + 1) * 60)
    seen, path = [], f"{FAILED_PAYMENTS}?limit=3"
    while True:
        data = read(http, path, token)
        assert len(data["invoices"]) <= 3
        assert data["totals"] == [{"currency": "usd", "invoices": 7, "amount_due": 7 * 2900}]
        seen.extend(row["id"] for row in data["invoices"])
        if data["next_cursor"] is None:
            break
        path = f"{FAILED_PAYMENTS}?limit=3&cursor={data['next_cursor']}&recovered_days=90"
    assert seen == [f"in_{n}" for n in range(7)]


BAD_QUERIES = [
    "limit=0",
    "limit=501",
    "limit=ten",
    "limit=-1",
    "limit=",
    "limit=1&limit=2",
    "cursor=not-a-cursor",
    "cursor=",
    "recovered_days=14",
    "recovered_days=30.0",
    "recovered=30",
    "since=2026-01-01",
    "flag",
]


def test_bad_or_unknown_parameters_are_400_with_the_rate_headers(http, token):
    for sent, query in enumerate(BAD_QUERIES, start=1):
        response = http.get(f"{FAILED_PAYMENTS}?{query}", headers=bearer(token))
        assert_error(response, 400, "invalid_parameters")
        assert response.headers["X-RateLimit-Limit"] == "100", query
        assert response.headers["X-RateLimit-Remaining"] == str(100 - sent), query


@pytest.mark.parametrize("authorization", [None, "Bearer pmf_0000000000000000_unknownsecret"])
def test_without_a_valid_token_it_is_401(http, authorization):
    headers = {"Authorization": authorization} if authorization else {}
    response = http.get(f"{FAILED_PAYMENTS}?limit=0", headers=headers)
    assert_error(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_a_token_without_a_reading_role_is_403_and_admins_read(http, engine):
    response = http.get(FAILED_PAYMENTS, headers=bearer(make_token(engine, "support")))
    assert_error(response, 403, "forbidden")
    assert response.headers["X-RateLimit-Remaining"] == "99"
    admin = http.get(FAILED_PAYMENTS, headers=bearer(make_token(engine, "admin")))
    assert admin.status_code == 200
    assert admin.headers["X-RateLimit-Limit"] == "100"


def test_live_invoices_link_to_the_live_dashboard(http, token):
    live = {**invoice("in_live", "open"), "livemode": True}
    event = sf.event("invoice.payment_failed", live, livemode=True)
    assert deliver(http, event).status_code == 200
    [row] = read(http, FAILED_PAYMENTS, token)["invoices"]
    assert row["stripe_url"] == "https://dashboard.stripe.com/invoices/in_live"


def test_the_openapi_document_describes_the_parameters(http):
    operation = http.get("/openapi.json").json()["paths"][FAILED_PAYMENTS]["get"]
    parameters = {p["name"]: p["schema"] for p in operation["parameters"]}
    assert parameters["limit"] == {"type": "integer", "minimum": 1, "maximum": 500, "default": 50}
    assert parameters["recovered_days"]["enum"] == [7, 30, 90]
    assert {"200", "400", "401", "403", "429"} <= set(operation["responses"])
