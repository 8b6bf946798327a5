"""The Finance API over real HTTP: every field from signed webhooks, auth, the error envelope."""

import itertools
import re
import time
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import Engine, text

from finance_core.access.tokens import create_token, list_tokens, revoke_token
from finance_core.store import migrate, statements
from finance_core.store.db import make_engine, read_transaction, write_transaction
from finance_core.views.queries import plan_id_for
from tests.conftest import deliver, make_settings
from tests.support import stripe_factory as sf
from tests.support.api import (
    ENDPOINTS,
    SUMMARY,
    SYNC_STATUS,
    assert_error,
    bearer,
    make_token,
    parse_utc,
    read,
)
from tests.support.servers import ThreadedServer


def delivered(response: httpx.Response) -> None:
    assert response.status_code == 200, response.text


@pytest.fixture
def token(engine: Engine) -> str:
    return make_token(engine, "finance")


def test_before_the_first_webhook_nothing_is_active_and_the_feed_is_delayed(http, token):
    before = datetime.now(UTC).replace(microsecond=0)
    summary = read(http, SUMMARY, token)
    assert summary["active_subscriptions"] == 0
    assert summary["plan_distribution"] == []
    assert summary["stripe_dashboard_url"] == "https://dashboard.stripe.com/revenue"
    assert before <= parse_utc(summary["as_of"]) <= datetime.now(UTC)

    assert read(http, SYNC_STATUS, token) == {
        "last_webhook_received": None,
        "webhook_health": "delayed",
        "failed_payments_count": 0,
        "last_webhook_event": None,
        "stripe_dashboard_url": "https://dashboard.stripe.com/payments",
    }


def deliver_scenario(http: httpx.Client) -> dict:
    """Two named plans and one unnamed, subscriptions in five statuses, three failing invoices."""
    created = itertools.count(int(time.time()) - 1000)

    def send(event_type: str, obj: dict) -> dict:
        event = sf.event(event_type, obj, created=next(created))
        delivered(deliver(http, event))
        return event

    send("product.created", sf.product("prod_pro", "Pro"))
    send("product.created", sf.product("prod_starter", "Starter"))
    plans = {
        "prod_pro": ["active", "active", "active", "trialing", "canceled"],
        "prod_starter": ["past_due", "active", "incomplete_expired"],
        "prod_unnamed": ["active", "unpaid"],
    }
    for product_id, statuses in plans.items():
        for n, status in enumerate(statuses):
            sub = sf.subscription(f"sub_{product_id}_{n}", status, product_id)
            send("customer.subscription.created", sub)
    for n in range(3):
        failing = sf.invoice(f"in_fail_{n}", "open", subscription_id="sub_prod_pro_0")
        send("invoice.payment_failed", failing)
    paid = sf.invoice("in_fail_0", "paid", subscription_id="sub_prod_pro_0")
    return send("invoice.paid", paid)


def test_numbers_equal_what_the_signed_webhooks_delivered(http, token):
    last = deliver_scenario(http)
    received_after = datetime.now(UTC).replace(microsecond=0)

    summary = read(http, SUMMARY, token)
    assert summary["active_subscriptions"] == 7
    assert summary["plan_distribution"] == [
        {"plan_id": str(plan_id_for("prod_pro")), "plan_name": "Pro", "count": 4},
        {"plan_id": str(plan_id_for("prod_starter")), "plan_name": "Starter", "count": 2},
        {"plan_id": str(plan_id_for("prod_unnamed")), "plan_name": "prod_unnamed", "count": 1},
    ]
    assert sum(plan["count"] for plan in summary["plan_distribution"]) == 7
    assert summary["stripe_dashboard_url"] == "https://dashboard.stripe.com/test/revenue"
    parse_utc(summary["as_of"])

    status = read(http, SYNC_STATUS, token)
    assert set(status) == {
        "last_webhook_received",
        "webhook_health",
        "failed_payments_count",
        "last_webhook_event",
        "stripe_dashboard_url",
    }
    assert status["webhook_health"] == "healthy"
    assert status["failed_payments_count"] == 2
    assert status["stripe_dashboard_url"] == "https://dashboard.stripe.com/test/payments"
    created = datetime.fromtimestamp(last["created"], UTC)
    assert status["last_webhook_event"] == {
        "id": last["id"],
        "type": "invoice.paid",
        "timestamp": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    received = parse_utc(status["last_webhook_received"])
    assert received_after - timedelta(seconds=30) <= received <= datetime.now(UTC)


def test_live_mode_data_links_to_the_live_dashboard(http, token):
    sub = sf.subscription("sub_live", "active", "prod_pro")
    delivered(deliver(http, sf.event("customer.subscription.created", sub, livemode=True)))
    summary = read(http, SUMMARY, token)
    assert summary["stripe_dashboard_url"] == "https://dashboard.stripe.com/revenue"
    assert summary["plan_distribution"][0]["count"] == 1
    status = read(http, SYNC_STATUS, token)
    assert status["stripe_dashboard_url"] == "https://dashboard.stripe.com/payments"


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize("role", ["finance", "admin"])
def test_finance_and_admin_tokens_read_with_rate_limit_headers(http, engine, path, role):
    response = http.get(path, headers=bearer(make_token(engine, role, "support")))
    assert response.status_code == 200, response.text
    assert response.headers["X-RateLimit-Limit"] == "100"
    assert response.headers["X-RateLimit-Remaining"] == "99"


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize(
    ("authorization", "challenge"),
    [
        (None, "Bearer"),
        ("Basic dXNlcjpwYXNz", "Bearer"),
        ("Bearer", "Bearer"),
        ("pmf_abc_def", "Bearer"),
        ("Bearer not-a-token", 'Bearer error="invalid_token"'),
        ("Bearer pmf_0000000000000000_unknownsecret", 'Bearer error="invalid_token"'),
    ],
)
def test_missing_malformed_or_unknown_tokens_get_401(http, path, authorization, challenge):
    headers = {"Authorization": authorization} if authorization else {}
    response = http.get(path, headers=headers)
    assert_error(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"] == challenge
    assert "X-RateLimit-Limit" not in response.headers


def test_a_token_with_a_wrong_secret_gets_401(http, token):
    prefix, token_id, _secret = token.split("_", 2)
    response = http.get(SUMMARY, headers=bearer(f"{prefix}_{token_id}_wrongsecret"))
    assert_error(response, 401, "unauthorized")


def test_a_revoked_token_gets_401(http, engine):
    token = create_token(
        engine=engine, name="leaving", roles=["finance"], actor="tests", now=datetime.now(UTC)
    )
    read(http, SUMMARY, token)
    revoke_token(engine=engine, name="leaving", actor="tests", now=datetime.now(UTC))
    response = http.get(SUMMARY, headers=bearer(token))
    assert_error(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("path", ENDPOINTS)
def test_a_token_without_a_reading_role_gets_403(http, engine, path):
    response = http.get(path, headers=bearer(make_token(engine, "support")))
    assert_error(response, 403, "forbidden")
    assert response.headers["X-RateLimit-Limit"] == "100"
    assert response.headers["X-RateLimit-Remaining"] == "99"
    assert "WWW-Authenticate" not in response.headers


def test_a_token_without_roles_gets_403(http, engine):
    assert_error(http.get(SUMMARY, headers=bearer(make_token(engine))), 403, "forbidden")


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize("query", ["since=2025-01-01", "limit=10&limit=20", "&", "flag"])
def test_any_query_parameter_is_400(http, token, path, query):
    response = http.get(f"{path}?{query}", headers=bearer(token))
    assert_error(response, 400, "invalid_parameters")
    assert response.headers["X-RateLimit-Remaining"] == "99"


def test_unknown_paths_and_methods_under_the_api_answer_in_the_envelope(http, token):
    assert_error(http.get("/api/v1/platform/finance/mrr", headers=bearer(token)), 404, "not_found")
    response = http.post(SUMMARY, headers=bearer(token))
    assert_error(response, 405, "method_not_allowed")
    assert response.headers["Allow"] == "GET"


def test_the_webhook_route_keeps_its_own_answers(http):
    assert http.get("/nowhere").json() == {"detail": "Not Found"}
    wrong_method = http.get("/webhooks/stripe")
    assert (wrong_method.status_code, wrong_method.headers["Allow"]) == (405, "POST")
    assert wrong_method.json() == {
        "received": False,
        "error": "method_not_allowed",
        "message": "use POST",
    }
    rejected = http.post("/webhooks/stripe", content=b"{}")
    assert rejected.status_code == 400
    assert rejected.json()["received"] is False
    assert http.get("/healthz").json()["status"] == "ok"


def test_a_database_failure_is_a_500_in_the_envelope(http, engine, token):
    read(http, SUMMARY, token)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE subscription_counts"))
    response = http.get(SUMMARY, headers=bearer(token))
    assert_error(response, 500, "internal_error")
    assert "subscription_counts" not in response.text


def tokens(engine: Engine) -> list:
    with read_transaction(engine) as conn:
        return list_tokens(conn=conn)


def test_a_successful_call_records_when_the_token_was_last_used(http, engine, token):
    assert [info.last_used_at for info in tokens(engine)] == [None]
    before = datetime.now(UTC).replace(microsecond=0)
    read(http, SYNC_STATUS, token)
    (info,) = tokens(engine)
    assert info.last_used_at is not None
    assert before <= info.last_used_at <= datetime.now(UTC)


@pytest.mark.parametrize("path", [*ENDPOINTS, "/healthz"])
def test_answers_carry_the_servers_own_time_in_server_timing(http, token, path):
    response = http.get(path, headers=bearer(token))
    assert response.status_code == 200, response.text
    match = re.fullmatch(r"app;dur=(\d+\.\d{3})", response.headers["Server-Timing"])
    assert match, response.headers["Server-Timing"]
    assert 0 < float(match[1]) < 30_000


def _in_transaction(conn) -> bool:
    driver = conn.connection.driver_connection
    if conn.dialect.name == "sqlite":
        return driver.in_transaction
    return driver.info.transaction_status.name != "IDLE"  # psycopg


@pytest.mark.parametrize("path", ENDPOINTS)
def test_an_answer_is_two_statements_outside_a_transaction(http, token, path, monkeypatch):
    """The token, then the answer, one snapshot each: on PostgreSQL two round trips, no BEGIN."""
    read(http, path, token)  # the token's last use is recorded once, in a transaction of its own
    executed = []
    run_on_driver = statements._execute

    def capture(conn, compiled, parameters):
        cursor = run_on_driver(conn, compiled, parameters)
        executed.append((compiled[0], _in_transaction(conn)))
        return cursor

    monkeypatch.setattr(statements, "_execute", capture)
    read(http, path, token)
    (token_sql, token_in_transaction), (answer_sql, answer_in_transaction) = executed
    assert "FROM api_tokens" in token_sql
    tables = {
        SUMMARY: ["subscription_counts", "products", "webhook_events"],
        SYNC_STATUS: ["webhook_events", "failing_invoice_totals", "rejection_totals"],
    }
    read_from = set(re.findall(r"(?:FROM|JOIN) (\w+)", answer_sql))
    assert read_from >= set(tables[path]), answer_sql
    assert not token_in_transaction and not answer_in_transaction


@contextmanager
def served_on_one_connection(database_url, settings):
    """The listener on an engine whose pool holds a single connection; the engine, a client."""
    from webhook_listener.app import create_app

    engine = make_engine(database_url, pool_size=1, max_overflow=0)
    migrate.upgrade(engine)
    server = ThreadedServer(create_app(settings, engine)).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            yield engine, client
    finally:
        server.stop()
        engine.dispose()


def test_answers_return_their_connection_ready_for_transactions(database_url, settings):
    """On a pool of one connection: the first answer records the token's use only once its
    own connection is back (it waited for itself before); after answers served outside a
    transaction, a write still rolls back whole (PostgreSQL's autocommit did not outlive
    them)."""
    with served_on_one_connection(database_url, settings) as (engine, client):
        token = make_token(engine, "finance")
        for path in ENDPOINTS * 2:
            read(client, path, token)
        with pytest.raises(RuntimeError), write_transaction(engine) as conn:
            conn.execute(text("DELETE FROM api_tokens"))
            raise RuntimeError("a failure half way through a write")
        assert len(tokens(engine)) == 1


@pytest.mark.postgres
def test_polling_healthz_keeps_the_answers_prepared(postgres_server):
    """/healthz runs outside a transaction: a ROLLBACK would have psycopg deallocate every
    statement prepared on the connection, and the answers be planned again each time."""
    database_url = postgres_server.create_database("healthz_prepared")
    with served_on_one_connection(database_url, make_settings(database_url)) as (engine, client):
        token = make_token(engine, "finance")
        for _ in range(6):  # psycopg prepares a statement from its fifth run on
            read(client, SUMMARY, token)
            assert client.get("/healthz").status_code == 200
        with engine.connect() as conn:  # the one connection the answers and /healthz used
            prepared = conn.exec_driver_sql("SELECT statement FROM pg_prepared_statements")
            statements_prepared = prepared.scalars().all()
    assert any("FROM api_tokens" in sql for sql in statements_prepared), statements_prepared
    assert any("subscription_counts" in sql for sql in statements_prepared)
