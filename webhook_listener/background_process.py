"""The worker process the listener starts: runs its background jobs until its stdin closes.

`python -m webhook_listener.background_process LEVEL ROUNDS_FD JOB...`; the settings arrive as
one JSON line on stdin (see `background.py`). Each job runs on a thread of its own, so that one
waiting on a slow service never holds up another. A job is a `finance_core` function
`job(*, engine, settings, stop, round_done)` that works until `stop` is set and calls
`round_done()` after each round of work; the job's name then goes to the listener as a line on
the pipe ROUNDS_FD (its metrics). A job that raises is logged and started again after a pause.
The process ends once the listener closes its end of the pipe or dies, after letting each job
finish the step it is in.
"""

import contextlib
import importlib
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine

from finance_core.settings import Settings

log = logging.getLogger("webhook_listener.background")

# Job name -> "module:function", imported only by a worker that runs it.
JOBS: dict[str, str] = {
    "resolver": "finance_core.feed.resolver:resolve_forever",
    "alerts": "finance_core.alerts.job:run_alerts",
    "digest": "finance_core.alerts.digest_job:run_digest",
    "housekeeping": "finance_core.feed.housekeeping:housekeeping",
    "feed_check": "finance_core.feed.feed_check:run_feed_checks",
}
JOB_RESTART_DELAY_S = 5.0
JOIN_TIMEOUT_S = 20.0

Job = Callable[..., None]


def main() -> int:
    level, rounds_fd, names = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Ctrl-C and a service manager's SIGTERM reach the whole process group: the listener
    # ends the worker itself (end of file on stdin) once it has answered what it took in.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    line = sys.stdin.buffer.readline()
    if not line:
        return 0  # the listener went away before saying how to run
    from finance_core.settings import load_settings
    from finance_core.store.db import make_engine

    settings = load_settings(_env_file=None, **json.loads(line))
    engine = make_engine(settings.database_url)
    stop = threading.Event()
    rounds = Rounds(rounds_fd)
    threads = [
        threading.Thread(
            target=run_job,
            args=(name, _load(JOBS[name]), engine, settings, stop, rounds.of(name)),
            name=name,
        )
        for name in names
    ]
    for thread in threads:
        thread.start()
    sys.stdin.buffer.read()  # until the listener closes its end, or dies
    stop.set()
    for thread in threads:
        thread.join(timeout=JOIN_TIMEOUT_S)
        if thread.is_alive():
            log.warning("background job %s did not finish its step in time", thread.name)
    engine.dispose()
    return 0


class Rounds:
    """Tells the listener, one line per round on a pipe, that a job finished a round of work.

    The pipe never holds a job up: a listener that does not read (or is gone) loses the line.
    """

    def __init__(self, fd: int) -> None:
        os.set_blocking(fd, False)
        self._fd = fd

    def of(self, job: str) -> Callable[[], None]:
        """The `round_done` of one job."""
        line = f"{job}\n".encode()

        def round_done() -> None:
            # One write of less than PIPE_BUF: whole, whatever the other jobs' threads write.
            # A full or closed pipe: this round goes uncounted.
            with contextlib.suppress(OSError):
                os.write(self._fd, line)

        return round_done


def run_job(
    name: str,
    job: Job,
    engine: Engine,
    settings: Settings,
    stop: threading.Event,
    round_done: Callable[[], None],
) -> None:
    """Run a job until `stop`; if it raises, log it and start it again after a pause."""
    while not stop.is_set():
        try:
            job(engine=engine, settings=settings, stop=stop, round_done=round_done)
            return
        except Exception:
            log.exception("background job %s failed; starting it again", name)
            stop.wait(JOB_RESTART_DELAY_S)


def _load(path: str) -> Any:
    module, _, function = path.partition(":")
    return getattr(importlib.import_module(module), function)


if __name__ == "__main__":
    sys.exit(main())
