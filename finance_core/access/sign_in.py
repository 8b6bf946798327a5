"""Dashboard sign-in rules: failed attempts throttled per username and per client address, audited.

5 failures for one username within 15 minutes lock that username for 15 minutes; 20 from one
client address lock the address. The counts are moving windows of the `limits` library in
RATE_LIMIT_STORAGE_URI, so dashboard replicas sharing a Redis share them. The lock is checked
before the password is: while locked, the right password is refused too, in the same words
whether or not the username exists (what is counted is the username typed, known or not).
"""

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import TypeVar, cast

import redis
from limits import RateLimitItem, parse
from limits.errors import StorageError
from limits.storage import RedisStorage, Storage, storage_from_string
from limits.strategies import MovingWindowRateLimiter
from sqlalchemy import Engine

from finance_core.access.audit import record, record_action
from finance_core.access.users import normalize_username
from finance_core.store.db import write_transaction

USERNAME_FAILURES = "5/15 minutes"
ADDRESS_FAILURES = "20/15 minutes"
# A lock is one hit in a window of this length: it lasts until that hit leaves the window.
LOCK_DURATION = "1/15 minutes"
# The username typed goes into the audit log cut to this: a long one is not a username.
MAX_TARGET_LENGTH = 64

T = TypeVar("T")


class SignInUnavailable(RuntimeError):
    """The attempt counts cannot be read (Redis down): no password is checked until they can."""


class Outcome(Enum):
    SIGNED_IN = "signed_in"
    REFUSED = "refused"
    LOCKED = "locked"


@dataclass(frozen=True, slots=True)
class Lock:
    seconds_left: int

    @property
    def message(self) -> str:
        """What the sign-in form says, the same for every username and address."""
        minutes = max(1, math.ceil(self.seconds_left / 60))
        unit = "minute" if minutes == 1 else "minutes"
        return f"Sign-in is locked after too many failed attempts. Try again in {minutes} {unit}."


@dataclass(frozen=True, slots=True)
class SignInResult:
    outcome: Outcome
    lock: Lock | None = None


def _window(item: RateLimitItem) -> str:
    minutes = item.get_expiry() / 60
    return f"{minutes:g} minutes" if minutes >= 1 else f"{item.get_expiry()} seconds"


class SignInThrottle:
    """The counts and locks, over one `limits` storage per dashboard process."""

    def __init__(
        self,
        storage_uri: str,
        *,
        username_failures: str = USERNAME_FAILURES,
        address_failures: str = ADDRESS_FAILURES,
        lock_duration: str = LOCK_DURATION,
    ) -> None:
        # Wrapped, a storage failure (Redis down) is a StorageError whatever the backend.
        self.storage: Storage = storage_from_string(  # type: ignore[assignment]
            storage_uri, wrap_exceptions=True
        )
        self.limiter = MovingWindowRateLimiter(self.storage)
        self.rules = {"username": parse(username_failures), "address": parse(address_failures)}
        self.lock_item = parse(lock_duration)

    def lock(self, *, username: str, address: str | None) -> Lock | None:
        """The lock on this username or address, if either is locked."""
        seconds = [
            self._seconds_left(kind, key)
            for kind, key in self._keys(username, address)
            if not self._call(self.limiter.test, self.lock_item, "sign-in-lock", kind, key)
        ]
        return Lock(max(seconds)) if seconds else None

    def record_failure(self, *, username: str, address: str | None) -> list[str]:
        """Count a failed attempt; which of "username" and "address" it locked."""
        locked = []
        for kind, key in self._keys(username, address):
            rule = self.rules[kind]
            counted = self._call(self.limiter.hit, rule, "sign-in-failures", kind, key)
            _, remaining = self._call(
                self.limiter.get_window_stats, rule, "sign-in-failures", kind, key
            )
            if not counted or remaining <= 0:
                self._call(self.limiter.hit, self.lock_item, "sign-in-lock", kind, key)
                # Once the lock ends, the next lock takes as many new failures as the first.
                self._call(self.limiter.clear, rule, "sign-in-failures", kind, key)
                locked.append(kind)
        return locked

    def record_success(self, *, username: str) -> None:
        """A signed-in user's earlier typos stop counting (the address's failures still do)."""
        key = _username_key(username)
        self._call(self.limiter.clear, self.rules["username"], "sign-in-failures", "username", key)

    def describe(self, kind: str) -> str:
        rule = self.rules[kind]
        return (
            f"{rule.amount} failed sign-ins for this {kind} within {_window(rule)}: "
            f"locked for {_window(self.lock_item)}"
        )

    def close(self) -> None:
        """Release the storage's connections."""
        if isinstance(self.storage, RedisStorage):
            # limits types its client as the few commands it uses; it is a redis.Redis.
            cast(redis.Redis, self.storage.get_connection()).close()

    def _keys(self, username: str, address: str | None) -> list[tuple[str, str]]:
        keys = [("username", _username_key(username))]
        if address:  # Streamlit reports no address for a local connection
            keys.append(("address", address))
        return keys

    def _seconds_left(self, kind: str, key: str) -> int:
        reset_at, _ = self._call(
            self.limiter.get_window_stats, self.lock_item, "sign-in-lock", kind, key
        )
        return max(1, math.ceil(reset_at - time.time()))

    def _call(self, method: Callable[..., T], *args: object) -> T:
        try:
            return method(*args)
        except StorageError as exc:
            raise SignInUnavailable(
                "sign-in is unavailable: the failed-attempt counts (RATE_LIMIT_STORAGE_URI) "
                "cannot be reached; try again in a moment"
            ) from exc


def _username_key(username: str) -> str:
    # Hashed: what someone typed (perhaps a password in the wrong field) never reaches Redis.
    return hashlib.sha256(normalize_username(username).encode()).hexdigest()


def attempt_sign_in(
    *,
    throttle: SignInThrottle,
    engine: Engine,
    username: str,
    address: str | None,
    check_password: Callable[[], bool],
    now: datetime,
) -> SignInResult:
    """One press of Login: refused unchecked while locked, else `check_password` decides.

    `check_password` is the authenticator's own check, which signs the session in when it
    passes; it runs only when neither the username nor the address is locked.
    """
    target = normalize_username(username)[:MAX_TARGET_LENGTH]
    actor = f"sign-in:{address or 'local'}"
    lock = throttle.lock(username=username, address=address)
    if lock is not None:
        record(
            engine=engine,
            actor=actor,
            action="sign_in_failed",
            target=target,
            detail="refused without checking the password: sign-in locked",
            now=now,
        )
        return SignInResult(Outcome.LOCKED, lock)
    if check_password():
        throttle.record_success(username=username)
        return SignInResult(Outcome.SIGNED_IN)
    locked = throttle.record_failure(username=username, address=address)
    with write_transaction(engine) as conn:
        record_action(
            conn,
            actor=actor,
            action="sign_in_failed",
            target=target,
            detail="wrong username or password",
            now=now,
        )
        for kind in locked:
            record_action(
                conn,
                actor=actor,
                action="sign_in_locked",
                target=target if kind == "username" else f"address {address}",
                detail=throttle.describe(kind),
                now=now,
            )
    lock = throttle.lock(username=username, address=address)
    return SignInResult(Outcome.LOCKED if lock else Outcome.REFUSED, lock)
