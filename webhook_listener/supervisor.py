"""Restarting the listener's child processes: capped exponential backoff, then giving up.

The writer and the background worker are each watched by a `Supervisor`. A child that ends
is started again after 1 s, doubling up to 30 s while it keeps ending soon after its start.
One that fails to start `GIVE_UP_AFTER` times in a row (a release whose dependency is missing,
a broken installation) ends the listener with one line saying why, so that systemd restarts
it or shows it failed, instead of a listener that answers 503 "restarting" for ever.
"""

import asyncio
import logging
import os
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger("webhook_listener")

FIRST_DELAY_S = 1.0
MAX_DELAY_S = 30.0
GIVE_UP_AFTER = 5
# A child that ran this long did start: a later end begins the count again.
STARTED_AFTER_S = 60.0
STOP_TIMEOUT_S = 30


class GaveUp(Exception):
    """A child process failed to start GIVE_UP_AFTER times in a row."""


def stop_this_process(reason: GaveUp) -> None:
    """Without a caller's own way to stop (plain `uvicorn webhook_listener.app:app`)."""
    log.error("%s", reason)
    os.kill(os.getpid(), signal.SIGTERM)


class Supervisor:
    """The restart policy of one child process; `run` starts it and starts it again."""

    def __init__(
        self,
        name: str,
        *,
        on_give_up: Callable[[GaveUp], None] = stop_this_process,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.name = name
        self.failed_starts = 0
        self._on_give_up = on_give_up
        self._clock = clock
        self._sleep = sleep
        self._started_at = clock()

    def started(self) -> None:
        """The child was started (now)."""
        self._started_at = self._clock()

    def next_delay(self) -> float:
        """How long to wait before the next start, after `failed_starts` failures."""
        return min(MAX_DELAY_S, FIRST_DELAY_S * 2 ** max(0, self.failed_starts - 1))

    async def restart(self, start: Callable[[], Awaitable[None]], how_it_ended: str) -> None:
        """The child ended (`how_it_ended`, e.g. "exit code 1"): start another after the
        backoff, until it starts or has failed GIVE_UP_AFTER times in a row."""
        if self._clock() - self._started_at >= STARTED_AFTER_S:
            self.failed_starts = 0  # it had started well: this end is not a failed start
        while True:
            self.failed_starts += 1
            if self.failed_starts >= GIVE_UP_AFTER:
                self._on_give_up(
                    GaveUp(
                        f"the {self.name} failed to start {self.failed_starts} times in a row "
                        f"(last: {how_it_ended}); stopping the listener"
                    )
                )
                return
            delay = self.next_delay()
            log.error(
                "the %s ended (%s); starting another in %.0f s", self.name, how_it_ended, delay
            )
            await self._sleep(delay)
            try:
                await start()
            except Exception as exc:  # counted as a failed start, never lost
                how_it_ended = f"could not be started: {type(exc).__name__}: {exc}"
                log.debug("starting the %s failed", self.name, exc_info=True)
                continue
            return


def end_process(process: "subprocess.Popen[bytes]", name: str) -> None:
    """Wait for a child asked to stop; kill it if it has not ended within STOP_TIMEOUT_S."""
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        log.error("the %s did not stop within %s s; killing it", name, STOP_TIMEOUT_S)
        process.kill()
        process.wait()
