"""One way to wait, for the tests and the benchmarks: poll a condition until it holds."""

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class NotWithin(AssertionError):
    """A condition did not hold within its time; the message names the condition."""


def wait_until(
    condition: Callable[[], T],
    *,
    timeout: float = 60,
    every: float = 0.05,
    what: str = "the condition",
    ignoring: tuple[type[Exception], ...] = (),
) -> T:
    """`condition()`'s first truthy value, asked every `every` seconds; NotWithin at `timeout`.

    An exception of a type in `ignoring` (a connection refused while a server starts) counts
    as "not yet". Generous timeouts cost nothing when the condition holds early, and a loaded
    machine is slow, not wrong.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = condition()
        except ignoring:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise NotWithin(f"{what}: not within {timeout} s")
        time.sleep(every)
