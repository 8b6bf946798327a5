"""The listener's background worker: a child process for the jobs that run off the request path.

Resolving thin events, evaluating alert rules and housekeeping wait on Stripe, on mail and chat
services and on long deletes. In a process of their own they neither take the event loop's
core nor its GIL, so webhook answers stay fast however slow those services are. The listener
starts the worker beside its writer, starts another should it die, and ends it on shutdown by
closing its stdin. Settings go to it over that pipe, secrets included, never on a command line.
Each round a job finishes comes back as a line on a second pipe, for the listener's metrics: an
alert job that stopped evaluating shows on /metrics, and tests wait for rounds, not for time.
Jobs that must run once however many listeners share a store take a lease there
(`finance_core.store.leases`); the rest claim their work row by row.
"""

import asyncio
import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import SecretStr

from finance_core.settings import Settings
from webhook_listener.background_process import JOBS
from webhook_listener.supervisor import (
    STOP_TIMEOUT_S,
    GaveUp,
    Supervisor,
    end_process,
    stop_this_process,
)

log = logging.getLogger("webhook_listener")


def settings_to_json(settings: Settings) -> str:
    """The settings as the worker process reads them back, secrets in the clear (a pipe only)."""

    def plain(value: Any) -> Any:
        if isinstance(value, SecretStr):
            return value.get_secret_value()
        if isinstance(value, list):
            return [plain(item) for item in value]
        return value

    return json.dumps({name: plain(getattr(settings, name)) for name in Settings.model_fields})


class BackgroundWorker:
    """Starts the worker process with the given jobs, restarts it if it dies, ends it on stop."""

    def __init__(
        self,
        settings: Settings,
        jobs: Sequence[str],
        *,
        log_level: int = logging.INFO,
        on_give_up: Callable[[GaveUp], None] = stop_this_process,
        on_round: Callable[[str], None] = lambda job: None,
    ) -> None:
        """`on_round(job)` is called, on a thread of its own, each time a job ends a round."""
        self._on_round = on_round
        self._supervisor = Supervisor("background worker", on_give_up=on_give_up)
        unknown = sorted(set(jobs) - set(JOBS))
        if unknown:
            raise ValueError(f"unknown background jobs: {', '.join(unknown)}")
        self._settings = settings
        self._jobs = list(jobs)
        self._log_level = log_level
        self._process: subprocess.Popen[bytes] | None = None
        self._watch: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def pid(self) -> int | None:
        """The worker process's id (None without jobs, or before start)."""
        return self._process.pid if self._process else None

    async def start(self) -> None:
        """Start the worker process, unless there is no job to run."""
        if not self._jobs:
            return
        rounds, rounds_end = os.pipe()
        try:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "webhook_listener.background_process",
                    logging.getLevelName(self._log_level),
                    str(rounds_end),
                    *self._jobs,
                ],
                stdin=subprocess.PIPE,
                pass_fds=(rounds_end,),
            )
        except BaseException:
            os.close(rounds)
            raise
        finally:
            os.close(rounds_end)  # the worker's alone: its exit is the reader's end of file
        threading.Thread(
            target=self._read_rounds, args=(rounds,), name="background-rounds", daemon=True
        ).start()
        assert process.stdin is not None
        process.stdin.write(settings_to_json(self._settings).encode() + b"\n")
        process.stdin.flush()
        self._process = process
        self._watch = asyncio.create_task(self._restart_when_it_ends(process))
        self._supervisor.started()

    async def stop(self) -> None:
        """Ask the worker to finish its jobs' current steps and end; kill it if it will not."""
        self._stopping = True
        process = self._process
        if process is None:
            return
        if process.stdin is not None and not process.stdin.closed:
            process.stdin.close()  # end of file: the worker's signal to stop
        await asyncio.to_thread(end_process, process, "background worker")
        if self._watch is not None:
            await asyncio.wait([self._watch], timeout=STOP_TIMEOUT_S)

    def _read_rounds(self, fd: int) -> None:
        with os.fdopen(fd, "rb") as pipe:
            for line in pipe:
                self._on_round(line.decode("ascii", "replace").strip())

    async def _restart_when_it_ends(self, process: subprocess.Popen[bytes]) -> None:
        code = await asyncio.to_thread(process.wait)
        if self._stopping:
            return
        if process.stdin is not None:
            process.stdin.close()
        await self._supervisor.restart(self._start_unless_stopping, f"exit code {code}")

    async def _start_unless_stopping(self) -> None:
        if not self._stopping:
            await self.start()
