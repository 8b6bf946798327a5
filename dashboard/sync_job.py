"""A Stripe sync started from the dashboard, on a thread of its own.

Streamlit ends a script run whenever the viewer clicks elsewhere or closes the tab, with an
exception `run_sync` does not catch (a BaseException): run inside the page, the sync would
stop between two pages of objects and its run would stay "running". On its own thread it
finishes and records its outcome whatever the browser does; the page only follows it.
"""

import logging
import threading
from collections.abc import Callable, Iterator
from datetime import datetime

from finance_core.feed.sync import Progress, SyncError, SyncReport

log = logging.getLogger(__name__)

Work = Callable[[Progress], SyncReport]


class SyncJob:
    """One run: its progress lines as they come, then its report or why it stopped."""

    def __init__(self, triggered_by: str, started_at: datetime) -> None:
        self.triggered_by = triggered_by
        self.started_at = started_at
        self.report: SyncReport | None = None
        self.error: str | None = None
        self._lines: list[str] = []
        self._done = False
        self._changed = threading.Condition()

    @property
    def done(self) -> bool:
        with self._changed:
            return self._done

    def follow(self, every: float = 1.0) -> Iterator[list[str]]:
        """The progress lines not yet seen, at least every `every` seconds, until the end.

        The regular beat (often with no line) lets the page touch Streamlit, which is where
        a click elsewhere takes effect; the job itself goes on.
        """
        seen = 0
        while True:
            with self._changed:
                if not self._done and len(self._lines) == seen:
                    self._changed.wait(every)
                new, done = self._lines[seen:], self._done
            seen += len(new)
            yield new
            if done:
                return

    def _progress(self, line: str) -> None:
        with self._changed:
            self._lines.append(line)
            self._changed.notify_all()

    def _run(self, work: Work) -> None:
        report, error = None, None
        try:
            report = work(self._progress)
        except SyncError as exc:
            error = str(exc)
        except Exception as exc:  # a bug: keep the traceback in the log, the gist on the page
            log.exception("sync started from the dashboard by %s failed", self.triggered_by)
            error = f"{type(exc).__name__}: {exc}"
        with self._changed:
            self.report, self.error, self._done = report, error, True
            self._changed.notify_all()


class SyncJobs:
    """The sync this dashboard process runs: at most one at a time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._current: SyncJob | None = None

    def running(self) -> SyncJob | None:
        with self._lock:
            current = self._current
        return current if current is not None and not current.done else None

    def start(self, work: Work, *, triggered_by: str, now: datetime) -> SyncJob:
        """Start `work` on its own thread, or return the run already going."""
        with self._lock:
            if self._current is not None and not self._current.done:
                return self._current
            job = self._current = SyncJob(triggered_by, now)
        threading.Thread(target=job._run, args=(work,), name="stripe-sync", daemon=True).start()
        return job
