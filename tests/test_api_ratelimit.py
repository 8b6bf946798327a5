"""Finance API rate limits: per token, per address for failed logins, and shared through Redis."""

import os
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from finance_core.access.tokens import create_token
from finance_core.settings import Settings
from finance_core.store import migrate
from finance_core.store.db import make_engine
from tests.conftest import make_settings
from tests.support import stripe_factory as sf
from tests.support.api import (
    ENDPOINTS,
    FAILED_PAYMENTS,
    SUMMARY,
    SYNC_STATUS,
    assert_error,
    bearer,
    make_token,
)
from tests.support.postgres import free_port
from tests.support.servers import start_listener, wait_healthy
from webhook_listener.ratelimit import FAILED_AUTH_LIMIT_PER_ADDRESS

FAILED_AUTH_LIMIT = int(FAILED_AUTH_LIMIT_PER_ADDRESS.split("/")[0])


@pytest.fixture
def settings(database_url: str) -> Settings:
    return make_settings(database_url, finance_api_rate_limit="5/minute")


def assert_retry_after(response: httpx.Response) -> None:
    assert 1 <= int(response.headers["Retry-After"]) <= 60


def test_a_token_past_its_limit_gets_429_with_retry_after(http, engine):
    token = make_token(engine, "finance")
    for n in range(5):
        response = http.get(ENDPOINTS[n % 2], headers=bearer(token))
        assert response.status_code == 200, response.text
        assert response.headers["X-RateLimit-Limit"] == "5"
        assert response.headers["X-RateLimit-Remaining"] == str(4 - n)

    response = http.get(SUMMARY, headers=bearer(token))
    assert_error(response, 429, "rate_limited")
    assert_retry_after(response)
    assert response.headers["X-RateLimit-Limit"] == "5"
    assert response.headers["X-RateLimit-Remaining"] == "0"

    other = http.get(SYNC_STATUS, headers=bearer(make_token(engine, "finance")))
    assert other.status_code == 200, "the limit is per token"
    assert other.headers["X-RateLimit-Remaining"] == "4"


def test_failed_payments_counts_against_the_same_token_limit(http, engine):
    token = make_token(engine, "finance")
    for n in range(5):
        path = FAILED_PAYMENTS if n % 2 else f"{FAILED_PAYMENTS}?limit=0"  # a 400 counts too
        response = http.get(path, headers=bearer(token))
        assert response.status_code == (200 if n % 2 else 400), response.text
        assert response.headers["X-RateLimit-Remaining"] == str(4 - n)
    response = http.get(FAILED_PAYMENTS, headers=bearer(token))
    assert_error(response, 429, "rate_limited")
    assert_retry_after(response)
    assert response.headers["X-RateLimit-Remaining"] == "0"


def test_a_token_without_a_role_is_limited_too(http, engine):
    token = make_token(engine, "support")
    for _ in range(5):
        assert_error(http.get(SUMMARY, headers=bearer(token)), 403, "forbidden")
    response = http.get(SUMMARY, headers=bearer(token))
    assert_error(response, 429, "rate_limited")
    assert response.headers["X-RateLimit-Remaining"] == "0"


def test_a_flood_of_failed_logins_from_one_address_gets_429(http, engine):
    for n in range(FAILED_AUTH_LIMIT):
        headers = bearer(f"pmf_guess{n}_secret") if n % 2 else {}
        assert_error(http.get(ENDPOINTS[n % 2], headers=headers), 401, "unauthorized")

    response = http.get(SUMMARY, headers=bearer("pmf_guess_secret"))
    assert_error(response, 429, "too_many_failed_attempts")
    assert_retry_after(response)
    assert "X-RateLimit-Limit" not in response.headers
    assert_error(http.get(SYNC_STATUS), 429, "too_many_failed_attempts")

    # A valid token from the same address (a shared NAT, a misconfigured neighbour) still reads.
    assert http.get(SUMMARY, headers=bearer(make_token(engine, "finance"))).status_code == 200


@pytest.mark.slow
def test_two_listener_processes_share_one_limit_through_redis(tmp_path: Path, redis_url: str):
    database_url = f"sqlite:///{tmp_path}/shared.db"
    engine = make_engine(database_url)
    migrate.upgrade(engine)
    token = create_token(
        engine=engine, name="shared", roles=["finance"], actor="tests", now=datetime.now(UTC)
    )
    engine.dispose()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "STRIPE_WEBHOOK_SECRET": sf.SECRET,
        "RATE_LIMIT_STORAGE_URI": redis_url,
        "FINANCE_API_RATE_LIMIT": "10/minute",
    }
    ports = [free_port(), free_port()]
    processes = [start_listener(env, port) for port in ports]
    try:
        urls = [f"http://127.0.0.1:{port}" for port in ports]
        for url, process in zip(urls, processes, strict=True):
            wait_healthy(url, process)
        statuses, remaining = [], []
        for n in range(14):
            response = httpx.get(f"{urls[n % 2]}{SUMMARY}", headers=bearer(token), timeout=10)
            statuses.append(response.status_code)
            remaining.append(response.headers["X-RateLimit-Remaining"])
        assert statuses == [200] * 10 + [429] * 4
        assert remaining == [str(9 - n) for n in range(10)] + ["0"] * 4
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.communicate(timeout=30)


@pytest.mark.slow
@pytest.mark.parametrize("trust_proxy", [False, True])
def test_behind_a_trusted_proxy_failed_logins_count_per_forwarded_address(tmp_path, trust_proxy):
    """X-Forwarded-For counts only from proxies named in --forwarded-allow-ips."""
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path}/proxy.db",
        "STRIPE_WEBHOOK_SECRET": sf.SECRET,
    }
    port = free_port()
    options = ["--forwarded-allow-ips", "127.0.0.1"] if trust_proxy else []
    process = start_listener(env, port, *options)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, process)
        with httpx.Client(base_url=url, timeout=10) as http:
            flooder = {"X-Forwarded-For": "203.0.113.5"}
            for _ in range(FAILED_AUTH_LIMIT):
                assert_error(http.get(SUMMARY, headers=flooder), 401, "unauthorized")
            assert_error(http.get(SUMMARY, headers=flooder), 429, "too_many_failed_attempts")
            neighbour = http.get(SUMMARY, headers={"X-Forwarded-For": "203.0.113.6"})
        if trust_proxy:  # another client behind the same proxy is not blocked
            assert_error(neighbour, 401, "unauthorized")
        else:  # the header is anyone's to set: everything comes from the proxy's address
            assert_error(neighbour, 429, "too_many_failed_attempts")
    finally:
        process.terminate()
        process.communicate(timeout=30)
