"""Sign-in throttling: locks per username and per address, shared through Redis, audited."""

from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from finance_core.access.sign_in import (
    Outcome,
    SignInThrottle,
    SignInUnavailable,
    attempt_sign_in,
)
from finance_core.store.db import read_transaction
from finance_core.store.models import audit_log
from tests.support.postgres import free_port
from tests.support.waiting import wait_until

PASSWORD = "throttled horse battery"


class Form:
    """The sign-in form of one client address: `check_password` is the authenticator's check."""

    def __init__(self, throttle: SignInThrottle, engine, address: str | None = "203.0.113.7"):
        self.throttle, self.engine, self.address = throttle, engine, address
        self.checked: list[str] = []

    def submit(self, username: str, password: str):
        def check_password() -> bool:
            self.checked.append(password)
            return username == "fiona" and password == PASSWORD

        return attempt_sign_in(
            throttle=self.throttle,
            engine=self.engine,
            username=username,
            address=self.address,
            check_password=check_password,
            now=datetime.now(UTC),
        )


def audited(engine) -> list[tuple[str, str, str, str]]:
    with read_transaction(engine) as conn:
        rows = conn.execute(select(audit_log).order_by(audit_log.c.id))
        return [(row.actor, row.action, row.target, row.detail) for row in rows]


@pytest.mark.parametrize("known", ["fiona", "nobody"])
def test_five_failures_lock_a_username_and_then_the_right_password_is_refused(engine, known):
    form = Form(SignInThrottle("memory://"), engine)
    results = [form.submit(known, f"guess {n}") for n in range(5)]
    assert [r.outcome for r in results] == [Outcome.REFUSED] * 4 + [Outcome.LOCKED]
    locked = form.submit(known, PASSWORD)
    assert locked.outcome is Outcome.LOCKED
    assert form.checked == [f"guess {n}" for n in range(5)]  # the right one was never checked
    assert locked.lock is not None
    assert locked.lock.message == (
        "Sign-in is locked after too many failed attempts. Try again in 15 minutes."
    )
    assert results[-1].lock is not None and results[-1].lock.message == locked.lock.message
    # Another username from the same address is not locked.
    assert form.submit("someone-else", "guess").outcome is Outcome.REFUSED

    entries = audited(engine)
    actors = {actor for actor, *_ in entries}
    assert actors == {"sign-in:203.0.113.7"}
    assert [action for _, action, target, _ in entries if target == known] == [
        *["sign_in_failed"] * 5,
        "sign_in_locked",
        "sign_in_failed",
    ]
    lock_detail = next(detail for _, action, _, detail in entries if action == "sign_in_locked")
    assert lock_detail == (
        "5 failed sign-ins for this username within 15 minutes: locked for 15 minutes"
    )
    assert entries[6][3] == "refused without checking the password: sign-in locked"
    assert not any(PASSWORD in repr(entry) or "guess" in repr(entry) for entry in entries)


def test_twenty_failures_from_one_address_lock_it_for_every_username(engine):
    throttle = SignInThrottle("memory://")
    form = Form(throttle, engine)
    outcomes = [form.submit(f"user{n % 5}-{n}", "guess").outcome for n in range(20)]
    assert outcomes[:19] == [Outcome.REFUSED] * 19 and outcomes[19] is Outcome.LOCKED
    assert form.submit("fiona", PASSWORD).outcome is Outcome.LOCKED
    assert PASSWORD not in form.checked

    elsewhere = Form(throttle, engine, address="198.51.100.2")
    assert elsewhere.submit("fiona", PASSWORD).outcome is Outcome.SIGNED_IN
    [lock] = [entry for entry in audited(engine) if entry[1] == "sign_in_locked"]
    assert lock[2] == "address 203.0.113.7"
    assert lock[3].startswith("20 failed sign-ins for this address within 15 minutes")


def test_without_an_address_only_the_username_counts(engine):
    """Streamlit reports no address for a local connection: not one shared lock for all."""
    form = Form(SignInThrottle("memory://"), engine, address=None)
    for n in range(30):
        assert form.submit(f"someone-{n}", "guess").outcome is Outcome.REFUSED
    assert form.submit("fiona", PASSWORD).outcome is Outcome.SIGNED_IN
    assert {actor for actor, *_ in audited(engine)} == {"sign-in:local"}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_sign_in_clears_the_usernames_typos_and_a_lock_ends(engine):
    throttle = SignInThrottle(
        "memory://", username_failures="3/1 minute", lock_duration="1/2 seconds"
    )
    form = Form(throttle, engine)
    for _ in range(2):
        form.submit("fiona", "typo")
    assert form.submit("fiona", PASSWORD).outcome is Outcome.SIGNED_IN
    for _ in range(2):  # two more typos do not lock: the first two no longer count
        assert form.submit("fiona", "typo").outcome is Outcome.REFUSED
    assert form.submit("fiona", "typo").outcome is Outcome.LOCKED
    assert form.submit("fiona", PASSWORD).outcome is Outcome.LOCKED
    # The lock ends by itself after its two seconds: wait for that, not for a fixed time.
    wait_until(lambda: throttle.lock(username="fiona", address=form.address) is None, timeout=30)
    assert form.submit("fiona", PASSWORD).outcome is Outcome.SIGNED_IN


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_dashboard_replicas_share_the_counts_through_redis(engine, redis_url):
    first, second = SignInThrottle(redis_url), SignInThrottle(redis_url)
    try:
        for n in range(3):
            Form(first, engine).submit("ada", f"guess {n}")
        for n in range(2):
            Form(second, engine).submit("ada", f"guess {n}")
        locked = Form(first, engine).submit("ada", PASSWORD)
        assert locked.outcome is Outcome.LOCKED
        assert Form(second, engine, address="198.51.100.2").submit("ada", PASSWORD).lock
    finally:
        first.close()
        second.close()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_an_unreachable_redis_refuses_sign_in_without_checking_the_password(engine):
    throttle = SignInThrottle(f"redis://127.0.0.1:{free_port()}")
    form = Form(throttle, engine)
    with pytest.raises(SignInUnavailable, match="RATE_LIMIT_STORAGE_URI"):
        form.submit("fiona", PASSWORD)
    assert form.checked == []
    throttle.close()
