"""Sign-in takes as long for a made-up username as for a real one with a wrong password.

Through the dashboard's own form (AppTest), against users hashed at a production bcrypt cost
whatever cost the rest of the tests use: the refusal of an unknown name runs bcrypt at the
store's cost too (finance_core.access.users.check_no_password).
"""

import statistics
import time
from datetime import UTC, datetime

import bcrypt
import pytest

from finance_core.access import users
from tests.support.apptest import COOKIE_KEY, app, forget

COST = 11
TRIES = 5


@pytest.fixture
def store(engine, database_url, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("DASHBOARD_COOKIE_KEY", COOKIE_KEY)
    monkeypatch.setattr(
        users, "hash_password", lambda p: bcrypt.hashpw(p.encode(), bcrypt.gensalt(COST)).decode()
    )
    users.add_user(
        engine=engine,
        username="tessa",
        password="tessa's real password",
        roles=["finance"],
        actor="tests",
        now=datetime.now(UTC),
    )
    yield engine
    forget()


def refused_in(username: str) -> float:
    """Seconds the Login press takes for `username` and a wrong password (refused)."""
    forget()  # a fresh throttle: no try here may lock the username
    at = app().run()
    at.text_input[0].input(username)
    at.text_input[1].input("a wrong password")
    start = time.perf_counter()
    at.button[0].click().run()
    elapsed = time.perf_counter() - start
    assert not at.exception
    assert [error.value for error in at.error] == ["Wrong username or password."]
    return elapsed


@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_unknown_and_known_usernames_take_the_same_time(store):
    refused_in("tessa")  # the first run of a process imports and connects: not counted
    known, unknown = [], []
    for _ in range(TRIES):
        known.append(refused_in("tessa"))
        unknown.append(refused_in("made-up-name"))
    fast, slow = sorted([statistics.median(known), statistics.median(unknown)])
    assert slow / fast < 1.5, (known, unknown)
