"""The listener as operators run it: a real process, real HTTP, and a database that goes away."""

import os
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime

import httpx
import pytest

from finance_core.access.tokens import create_token
from finance_core.store.db import make_engine
from tests.conftest import deliver, make_settings, own_postgres_server
from tests.support import stripe_factory as sf
from tests.support.api import SUMMARY
from tests.support.postgres import PostgresServer, find_pg_bin, free_port
from tests.support.servers import ThreadedServer, start_listener, wait_healthy, writer_of
from tests.support.waiting import wait_until


@pytest.mark.slow
@pytest.mark.parametrize(
    ("secret", "message"),
    [
        (None, "STRIPE_WEBHOOK_SECRET is not set"),
        ("changeme", "STRIPE_WEBHOOK_SECRET is a placeholder"),
    ],
)
def test_listener_refuses_to_start_without_a_real_secret(tmp_path, secret, message):
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path}/x.db"}
    env.pop("STRIPE_WEBHOOK_SECRET", None)
    if secret:
        env["STRIPE_WEBHOOK_SECRET"] = secret
    process = start_listener(env, free_port())
    _, stderr = process.communicate(timeout=60)
    assert process.returncode != 0
    assert message in stderr


@pytest.mark.slow
def test_listener_refuses_an_in_memory_database():
    """Its writer process could not see the same store: say so instead of losing webhooks."""
    env = {**os.environ, "DATABASE_URL": "sqlite://", "STRIPE_WEBHOOK_SECRET": sf.SECRET}
    process = start_listener(env, free_port())
    _, stderr = process.communicate(timeout=60)
    assert process.returncode != 0
    assert "DATABASE_URL is an in-memory SQLite database" in stderr


@pytest.mark.slow
def test_uvicorn_entry_point_refuses_to_start_without_a_secret(tmp_path):
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path}/x.db"}
    env.pop("STRIPE_WEBHOOK_SECRET", None)
    process = subprocess.run(
        [sys.executable, "-m", "uvicorn", "webhook_listener.app:app", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert process.returncode != 0
    assert "STRIPE_WEBHOOK_SECRET is not set" in process.stderr


def healthy_listener(database_url: str) -> tuple[subprocess.Popen[str], str]:
    """`python -m webhook_listener` with the tests' secret, once healthy: process and URL."""
    port = free_port()
    env = {**os.environ, "DATABASE_URL": database_url, "STRIPE_WEBHOOK_SECRET": sf.SECRET}
    process = start_listener(env, port)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process)
    except BaseException:
        process.kill()
        process.communicate(timeout=30)
        raise
    return process, url


@pytest.mark.slow
def test_listener_process_takes_signed_webhooks_over_http(tmp_path):
    process, url = healthy_listener(f"sqlite:///{tmp_path}/live.db")
    try:
        with httpx.Client(base_url=url) as http:
            health = http.get("/healthz").json()
            assert health == {"status": "ok", "database": "reachable", "writer": "running"}
            event = sf.event(
                "customer.subscription.created", sf.subscription("sub_live", "active", "prod_live")
            )
            assert deliver(http, event).json() == {"received": True, "outcome": "processed"}
            assert deliver(http, event).json() == {"received": True, "outcome": "duplicate"}
    finally:
        process.terminate()
        stdout, stderr = process.communicate(timeout=30)
    # uvicorn shuts down cleanly on SIGTERM, then re-raises it as its exit status.
    assert process.returncode in (0, -15)
    assert "Traceback" not in stderr
    assert sf.SECRET not in stdout + stderr


@pytest.mark.slow
def test_healthz_says_503_while_a_dead_writer_is_replaced(tmp_path):
    """A load balancer stops routing webhooks to a listener that cannot store them."""
    process, url = healthy_listener(f"sqlite:///{tmp_path}/writer.db")
    try:
        writer = writer_of(process.pid)
        assert writer is not None
        os.kill(writer, signal.SIGKILL)
        seen = []
        deadline = time.monotonic() + 30
        with httpx.Client(base_url=url) as http:
            while time.monotonic() < deadline:  # the listener waits a second before restarting
                health = http.get("/healthz")
                seen.append((health.status_code, health.json()["writer"]))
                if seen[-1] == (200, "running") and (503, "restarting") in seen:
                    break
                time.sleep(0.01)
            assert (503, "restarting") in seen
            assert seen[-1] == (200, "running")
            assert writer_of(process.pid) not in (None, writer)
            event = sf.event("product.created", sf.product("prod_after", "After"))
            assert deliver(http, event).json() == {"received": True, "outcome": "processed"}
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=30)
    assert "the writer process ended" in stderr


@pytest.mark.slow
def test_database_outage_answers_503_loses_nothing_and_recovers():
    """Webhooks and the Finance API answer 503 while PostgreSQL is away, then carry on."""
    bin_dir = find_pg_bin()
    if bin_dir is None:
        from tests.conftest import skip_or_fail

        skip_or_fail("no PostgreSQL server binaries", package="postgresql")
    from finance_core.store import migrate
    from finance_core.store.db import make_engine, read_transaction
    from tests.support.reads import plan_counts
    from webhook_listener.app import create_app

    server = PostgresServer(bin_dir)
    server.start()
    try:
        url = server.create_database("outage")
        engine = make_engine(url)
        migrate.upgrade(engine)
        token = create_token(
            engine=engine, name="outage", roles=["finance"], actor="tests", now=datetime.now(UTC)
        )
        listener = ThreadedServer(create_app(make_settings(url), engine)).start()
        try:
            with httpx.Client(base_url=listener.url, timeout=30) as http:
                first = sf.event(
                    "customer.subscription.created", sf.subscription("sub_o1", "active", "prod_o")
                )
                assert deliver(http, first).status_code == 200

                server.pause()
                assert http.get("/healthz").status_code == 503
                assert http.get("/healthz").json()["database"] == "unreachable"
                api = http.get(SUMMARY, headers={"Authorization": f"Bearer {token}"})
                assert api.status_code == 503  # an outage, not an internal error
                assert api.json()["error"]["code"] == "database_unavailable"
                assert int(api.headers["Retry-After"]) > 0
                during = sf.event(
                    "customer.subscription.created", sf.subscription("sub_o2", "active", "prod_o")
                )
                response = deliver(http, during)
                assert response.status_code == 503  # not acknowledged: Stripe will retry
                assert response.json()["error"] == "database_unavailable"

                server.resume()
                assert http.get("/healthz").status_code == 200
                api = http.get(SUMMARY, headers={"Authorization": f"Bearer {token}"})
                assert api.status_code == 200
                assert deliver(http, during).json()["outcome"] == "processed"  # the retry
        finally:
            listener.stop()
        with read_transaction(engine) as conn:
            (plan,) = plan_counts(conn, ["active"])
        assert plan.count == 2
        engine.dispose()
    finally:
        server.stop()


def test_finance_api_answers_503_when_the_rate_limit_storage_is_unreachable(tmp_path):
    """Redis down: the API says so (and a retry may work); webhooks do not depend on it."""
    from finance_core.store import migrate
    from finance_core.store.db import make_engine
    from webhook_listener.app import create_app

    url = f"sqlite:///{tmp_path}/redis-down.db"
    engine = make_engine(url)
    migrate.upgrade(engine)
    token = create_token(
        engine=engine, name="no-redis", roles=["finance"], actor="tests", now=datetime.now(UTC)
    )
    nothing_there = f"redis://127.0.0.1:{free_port()}"
    settings = make_settings(url, rate_limit_storage_uri=nothing_there)
    listener = ThreadedServer(create_app(settings, engine)).start()
    try:
        with httpx.Client(base_url=listener.url, timeout=30) as http:
            response = http.get(SUMMARY, headers={"Authorization": f"Bearer {token}"})
            assert response.status_code == 503
            assert response.json()["error"]["code"] == "rate_limit_unavailable"
            assert "rate limit storage" in response.json()["error"]["message"]
            assert int(response.headers["Retry-After"]) > 0
            event = sf.event(
                "customer.subscription.created", sf.subscription("sub_r1", "active", "prod_r")
            )
            assert deliver(http, event).json() == {"received": True, "outcome": "processed"}
    finally:
        listener.stop()
        engine.dispose()


# --- start-up: a database that does not answer yet, or refuses -------------------------------


@pytest.fixture(scope="module")
def own_postgres():
    """A PostgreSQL server of this module's own, since the tests stop and start it."""
    yield from own_postgres_server()


def with_password(url: str, password: str) -> str:
    """The test server trusts its user whatever the password: one to look for in the logs."""
    return url.replace("@", f":{password}@", 1)


def is_paused(server: PostgresServer) -> bool:
    try:
        socket.create_connection(("127.0.0.1", server.port), timeout=1).close()
        return False
    except OSError:
        return True


def listener_logging(env: dict[str, str], port: int) -> subprocess.Popen[str]:
    return start_listener(env, port, "--log-level", "info")


def wait_for(url: str, expected: int) -> httpx.Response:
    """`url`'s first answer with the status `expected`."""

    def answer() -> httpx.Response | None:
        response = httpx.get(url, timeout=1)
        return response if response.status_code == expected else None

    return wait_until(
        answer,
        timeout=60,
        every=0.1,
        what=f"{url} answering {expected}",
        ignoring=(httpx.TransportError,),
    )


@pytest.mark.postgres
def test_a_database_that_does_not_answer_yet_is_waited_for_with_503s_meanwhile(own_postgres):
    """As on boot, when systemd starts the listener before PostgreSQL: one line, then 503s."""
    password = "pw-not-for-logs"
    url = with_password(own_postgres.create_database("late"), password)
    own_postgres.pause()
    port = free_port()
    env = {**os.environ, "DATABASE_URL": url, "STRIPE_WEBHOOK_SECRET": sf.SECRET}
    process = listener_logging(env, port)
    base = f"http://127.0.0.1:{port}"
    event = sf.event("customer.subscription.created", sf.subscription("sub_l", "active", "p_l"))
    try:
        health = wait_for(f"{base}/healthz", 503)
        assert health.json() == {
            "status": "degraded",
            "database": "unreachable",
            "writer": "starting",
        }
        with httpx.Client(base_url=base, timeout=10) as http:
            early = deliver(http, event)
            assert early.status_code == 503  # not acknowledged: Stripe retries
            assert early.json()["error"] == "database_unavailable"
            api = http.get(SUMMARY, headers={"Authorization": "Bearer pmf_any_token"})
            assert api.status_code == 503
            assert api.json()["error"]["code"] == "database_unavailable"
            assert process.poll() is None

            own_postgres.resume()  # the listener notices within its backoff (1, 2, 4 s ...)
            assert wait_for(f"{base}/healthz", 200).json()["writer"] == "running"
            assert deliver(http, event).json() == {"received": True, "outcome": "processed"}
            engine = make_engine(url)  # migrated by the listener once the database answered
            token = create_token(
                engine=engine, name="late", roles=["finance"], actor="tests", now=datetime.now(UTC)
            )
            engine.dispose()
            summary = http.get(SUMMARY, headers={"Authorization": f"Bearer {token}"})
            assert summary.json()["data"]["active_subscriptions"] == 1
    finally:
        if is_paused(own_postgres):
            own_postgres.resume()
        process.terminate()
        stdout, stderr = process.communicate(timeout=30)
    logs = stdout + stderr
    waiting = [line for line in logs.splitlines() if "does not answer yet" in line]
    assert len(waiting) == 1, logs
    assert f"postgresql+psycopg://finance_test:***@127.0.0.1:{own_postgres.port}/late" in waiting[0]
    assert password not in logs and sf.SECRET not in logs
    assert "Traceback" not in logs
    assert "alembic" not in logs  # no library chatter
    assert f"starting on http://127.0.0.1:{port}" in logs
    assert "1 webhook signing secret" in logs
    assert "schema migrated from an empty database" in logs
    assert "store open (" in logs and "no events yet; taking webhooks" in logs


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda url: url.replace("finance_test@", "no_such_role@"), 'role "no_such_role"'),
        (lambda url: url.rsplit("/", 1)[0] + "/no_such_db", 'database "no_such_db"'),
    ],
    ids=["wrong-user", "missing-database"],
)
@pytest.mark.parametrize("database_up_at_start", [True, False], ids=["up", "later"])
@pytest.mark.postgres
def test_a_database_that_refuses_the_credentials_ends_the_listener(
    own_postgres, mangle, message, database_up_at_start
):
    """Retrying cannot fix bad credentials: one clear line and exit status 2, at start or later."""
    url = with_password(mangle(own_postgres.url("postgres")), "pw-not-for-logs")
    env = {**os.environ, "DATABASE_URL": url, "STRIPE_WEBHOOK_SECRET": sf.SECRET}
    if not database_up_at_start:
        own_postgres.pause()
    try:
        process = start_listener(env, free_port())
        if not database_up_at_start:
            time.sleep(1.5)
            assert process.poll() is None  # waiting for it, as for any database not up yet
            own_postgres.resume()
        _, stderr = process.communicate(timeout=60)
    finally:
        if is_paused(own_postgres):
            own_postgres.resume()
    assert process.returncode == 2, stderr
    (error,) = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert "DATABASE_URL" in error and "refuses" in error and message in error
    assert "***" in error and "pw-not-for-logs" not in stderr
    assert "Traceback" not in stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "mysqlx://user:pw-not-for-logs@db/finance",
            "Can't load plugin: sqlalchemy.dialects:mysqlx",
        ),
        ("postgresql+pg8000://user:pw-not-for-logs@db/finance", "No module named 'pg8000'"),
        ("not a url", "DATABASE_URL is not a database URL"),
    ],
)
def test_a_database_url_sqlalchemy_cannot_use_is_one_clear_line(url, message):
    env = {**os.environ, "DATABASE_URL": url, "STRIPE_WEBHOOK_SECRET": sf.SECRET}
    process = start_listener(env, free_port())
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 2
    assert stderr.startswith("error: DATABASE_URL") and message in stderr, stderr
    assert len(stderr.strip().splitlines()) == 1
    assert "pw-not-for-logs" not in stderr
