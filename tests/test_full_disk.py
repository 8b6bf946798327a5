"""A full disk under the SQLite store is waited out (SPEC 18): deliveries get 503 while no
page can be written, nothing acknowledged is lost, no event is failed, and once space comes
back Stripe's redeliveries land and the store equals a clean run.

The store lives on a small tmpfs of its own, filled up by a file beside it. Mounting needs
root (CAP_SYS_ADMIN): elsewhere the test is skipped with its reason, never under CI=true.
"""

import errno
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from finance_core.store import migrate
from finance_core.store.db import make_engine
from tests.conftest import skip_or_fail
from tests.support.bursts import (
    ALERTS_EVERY_SECOND,
    acknowledged_in,
    alerts_recovered_without_flapping,
    assert_same_as_a_clean_run,
    burst,
    codes,
    listener_and_writer,
    no_failed_events_and_healthy,
    redeliver_the_unacknowledged,
    send_all,
)

pytestmark = pytest.mark.slow
SIZE = (
    "8m"  # the migrated store and its WAL take about 1 MB; the burst needs more than what is left
)


@contextmanager
def small_filesystem(path: Path) -> Iterator[Path]:
    """A tmpfs of SIZE mounted at `path`, unmounted after."""
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={SIZE},mode=0700", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        skip_or_fail(f"cannot mount a small filesystem here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(filler: Path) -> int:
    """Write `filler` until the filesystem has no byte left; how many bytes it took."""
    written = 0
    with filler.open("wb", buffering=0) as out:
        for chunk in (1 << 20, 1 << 16, 1 << 12, 1 << 9, 1):
            while True:
                try:
                    written += out.write(b"\0" * chunk)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
                    break
    return written


def test_a_full_disk_is_waited_out_and_heals_when_space_comes_back(tmp_path) -> None:
    with small_filesystem(tmp_path / "small") as small:
        url = f"sqlite:///{small}/finance.db"
        engine = make_engine(url)
        migrate.upgrade(engine)
        engine.dispose()
        events = burst(600, seed=31)
        warm, rest = events[:50], events[50:]
        with listener_and_writer(url, **ALERTS_EVERY_SECOND) as (listener, writer):
            assert set(codes(send_all(listener.url, warm)).values()) == {200}
            filler = small / "filler"
            assert fill(filler) > 0
            first = codes(send_all(listener.url, rest, workers=4))
            # While full: Stripe is told to try again, never that the event failed.
            assert 503 in first.values(), "the full disk held nothing up"
            assert set(first.values()) <= {200, 503, None}, set(first.values())
            filler.unlink()  # space comes back
            redeliver_the_unacknowledged(listener.url, rest, first, seed=32)
            assert listener.writer_pid() == writer  # waited out, not crashed
            acknowledged = acknowledged_in(first) | {event["id"] for event in warm}
            alerts_recovered_without_flapping(url)
        assert_same_as_a_clean_run(tmp_path, url, events, acknowledged)
        no_failed_events_and_healthy(url)
