"""Tell a passing fault of what we depend on from a fault of the event being worked on."""

from limits.errors import StorageError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import DBAPIError

from finance_core.store.db import is_unavailable


def is_transient(exc: BaseException) -> bool:
    """Whether `exc` says "Redis, the database or the network is away or busy: try again later".

    Such a fault is waited out and retried; it never marks an event failed (SPEC 18). Anything
    else met while working on one event is that event's own fault.
    """
    if isinstance(exc, DBAPIError):
        return is_unavailable(exc)
    if isinstance(exc, StorageError):  # the rate-limit storage (Redis), wrapped by `limits`
        return True
    if isinstance(exc, RedisConnectionError | RedisTimeoutError):
        return True
    # A connection refused, reset or timed out, met below a library that did not wrap it.
    return isinstance(exc, ConnectionError | TimeoutError)
