"""Shared fixtures: a store on SQLite and on a real PostgreSQL server, and a running listener."""

import itertools
import os
import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, make_url

from finance_core.access.users import TEST_BCRYPT_ROUNDS_VARIABLE
from finance_core.settings import Settings, load_settings
from finance_core.store import migrate
from finance_core.store.db import make_engine
from tests.support.cluster import Cluster, cluster
from tests.support.postgres import PostgresServer, find_pg_bin
from tests.support.redis_server import redis_server
from tests.support.servers import ThreadedServer
from tests.support.stripe_api import StripeStandIn, running_stand_in
from tests.support.stripe_factory import SECRET, signed
from tests.support.system_packages import install_hint, which

IN_CI = os.environ.get("CI") == "true"
_database_names = itertools.count(1)


def pytest_configure(config: pytest.Config) -> None:
    # bcrypt's minimum cost for the passwords tests set, here and in the processes they start
    # (finance_core.access.users honours it only under pytest).
    os.environ.setdefault(TEST_BCRYPT_ROUNDS_VARIABLE, "4")


def skip_or_fail(reason: str, *, package: str | None = None) -> None:
    """Skip with the reason (and how to install the missing `package`); under CI=true, fail."""
    if package is not None:
        reason = f"{reason}: {install_hint(package)}"
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: this suite must run)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    yield from own_postgres_server()


def own_postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server of the caller's own, for a fixture to yield from; stopped after."""
    bin_dir = find_pg_bin()
    if bin_dir is None:
        skip_or_fail("no PostgreSQL server binaries", package="postgresql")
    assert bin_dir is not None
    server = PostgresServer(bin_dir)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A throwaway redis-server on a free port, without persistence."""
    binary = shutil.which("redis-server")
    if binary is None:
        skip_or_fail("no redis-server binary", package="redis-server")
    assert binary is not None
    with redis_server(binary) as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    """A fresh, empty database: a SQLite file, or a new database on the PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/finance.db"
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.create_database(f"finance_{os.getpid()}_{next(_database_names)}")


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite store at the newest schema, migrated once a session, for stores to copy."""
    path = tmp_path_factory.mktemp("migrated") / "finance.db"
    engine = make_engine(f"sqlite:///{path}")
    migrate.upgrade(engine)
    engine.dispose()
    return path


def upgraded(url: str, request: pytest.FixtureRequest) -> Engine:
    """An engine on `url` at the newest schema: a new SQLite file as a copy of one migrated
    for the session (half a second less a test), any other database migrated."""
    database = make_url(url).database
    if url.startswith("sqlite") and database and not Path(database).exists():
        template: Path = request.getfixturevalue("migrated_sqlite")
        with (
            closing(sqlite3.connect(template)) as source,
            closing(sqlite3.connect(database)) as copy,
        ):
            source.backup(copy)
        return make_engine(url)
    engine = make_engine(url)
    migrate.upgrade(engine)
    return engine


@pytest.fixture
def engine(database_url: str, request: pytest.FixtureRequest) -> Iterator[Engine]:
    engine = upgraded(database_url, request)
    yield engine
    engine.dispose()


@pytest.fixture
def second_engine(
    database_url: str, request: pytest.FixtureRequest, tmp_path: Any
) -> Iterator[Engine]:
    """Another fresh store on the same kind of database as `engine`."""
    if database_url.startswith("sqlite"):
        url = f"sqlite:///{tmp_path}/second.db"
    else:
        server: PostgresServer = request.getfixturevalue("postgres_server")
        url = server.create_database(f"finance_{os.getpid()}_{next(_database_names)}")
    engine = upgraded(url, request)
    yield engine
    engine.dispose()


@pytest.fixture
def stripe_api() -> Iterator[StripeStandIn]:
    """The local stand-in for Stripe's API, serving over HTTP until the test ends."""
    with running_stand_in() as stand_in:
        yield stand_in


def make_settings(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "stripe_webhook_secret": SECRET,
        "_env_file": None,
    }
    values.update(overrides)
    return load_settings(**values)


@pytest.fixture
def settings(database_url: str) -> Settings:
    return make_settings(database_url)


@pytest.fixture
def listener(settings: Settings, engine: Engine) -> Iterator[ThreadedServer]:
    """The listener app served over real HTTP on a loopback port, without background jobs.

    Tests of a job run it themselves, or start a listener process that runs it.
    """
    from webhook_listener.app import create_app

    server = ThreadedServer(create_app(settings, engine, jobs=[])).start()
    yield server
    server.stop()


@pytest.fixture
def http(listener: ThreadedServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=listener.url, timeout=30) as client:
        yield client


def deliver(
    http: httpx.Client, event: dict[str, Any], secret: str = SECRET, timestamp: int | None = None
) -> httpx.Response:
    """POST one signed event to the listener, as Stripe does."""
    body, headers = signed(event, secret, timestamp)
    return http.post("/webhooks/stripe", content=body, headers=headers)


@pytest.fixture
def scale_out_env() -> dict[str, str]:
    """Settings of every listener in `scale_out` (override it in a module for others)."""
    return {}


@pytest.fixture
def scale_out(
    postgres_server: PostgresServer, redis_url: str, tmp_path: Any, scale_out_env: dict[str, str]
) -> Iterator[Cluster]:
    """HAProxy (deploy/haproxy.cfg) in front of two listener processes started as
    deploy/finance-listener@.service says, on one fresh PostgreSQL database and one Redis."""
    binary = which("haproxy")
    if binary is None:
        skip_or_fail("no haproxy binary", package="haproxy")
    assert binary is not None
    env = {**os.environ, "STRIPE_WEBHOOK_SECRET": SECRET, **scale_out_env}
    url = postgres_server.create_database(f"finance_{os.getpid()}_{next(_database_names)}")
    with cluster(
        haproxy_binary=binary, env=env, workdir=tmp_path, database_url=url, redis_url=redis_url
    ) as running:
        yield running
