"""The restart policy of the listener's children (SPEC 18): capped exponential backoff, then
giving up with one line; and a real listener whose writer cannot start ends with status 1."""

import asyncio
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.support.postgres import free_port
from tests.support.stripe_factory import SECRET
from webhook_listener.supervisor import MAX_DELAY_S, STARTED_AFTER_S, GaveUp, Supervisor

ROOT = Path(__file__).resolve().parent.parent


class FakeTime:
    """A clock that moves only when the supervisor sleeps (or the test says so)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def supervised(time_: FakeTime, gave_up: list[GaveUp]) -> Supervisor:
    return Supervisor(
        "writer process", on_give_up=gave_up.append, clock=time_.clock, sleep=time_.sleep
    )


def test_a_child_that_keeps_failing_is_given_up_after_five_starts_with_backoff() -> None:
    time_, gave_up = FakeTime(), []
    supervisor = supervised(time_, gave_up)
    starts: list[float] = []

    async def start() -> None:
        starts.append(time_.now)
        raise OSError("No module named 'webhook_listener.writer_process'")

    supervisor.started()
    asyncio.run(supervisor.restart(start, "exit code 1"))
    assert time_.sleeps == [1.0, 2.0, 4.0, 8.0]
    assert len(starts) == 4
    assert len(gave_up) == 1
    message = str(gave_up[0])
    assert "writer process failed to start 5 times in a row" in message
    assert "No module named" in message


def test_the_delay_doubles_to_thirty_seconds_and_a_child_that_ran_starts_the_count_again() -> None:
    time_, gave_up = FakeTime(), []
    supervisor = supervised(time_, gave_up)
    delays = []
    for failures in range(1, 9):
        supervisor.failed_starts = failures
        delays.append(supervisor.next_delay())
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, MAX_DELAY_S, MAX_DELAY_S, MAX_DELAY_S]

    async def start() -> None:
        supervisor.started()

    supervisor.failed_starts = 0
    supervisor.started()
    for _ in range(3):  # each child ends soon after its start: the delay grows
        asyncio.run(supervisor.restart(start, "exit code 1"))
    assert time_.sleeps == [1.0, 2.0, 4.0]
    time_.now += STARTED_AFTER_S  # this child ran a while: its end is not a failed start
    asyncio.run(supervisor.restart(start, "killed"))
    assert time_.sleeps[-1] == 1.0
    assert gave_up == []


@pytest.mark.slow
def test_a_listener_whose_writer_cannot_start_ends_with_status_1_and_one_line(tmp_path) -> None:
    """A release whose writer module went missing under a running listener: its writer is
    killed, cannot be started again, and the listener ends so that systemd notices."""
    release = tmp_path / "release"
    for package in ("finance_core", "webhook_listener"):
        shutil.copytree(
            ROOT / package, release / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    port = free_port()
    env = {
        "PATH": "/usr/bin:/bin",
        "DATABASE_URL": f"sqlite:///{tmp_path}/finance.db",
        "STRIPE_WEBHOOK_SECRET": SECRET,
    }
    listener = subprocess.Popen(
        [sys.executable, "-m", "webhook_listener", "--port", str(port), "--jobs", "none"],
        cwd=release,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            pytest.fail("the listener did not start")
        (release / "webhook_listener" / "writer_process.py").unlink()
        writer = [
            line.split()[0]
            for line in subprocess.run(
                ["ps", "-o", "pid=,args=", "--ppid", str(listener.pid)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.splitlines()
            if "writer_process" in line
        ]
        assert writer, "no writer process"
        subprocess.run(["kill", "-9", writer[0]], check=True)
        # 1 + 2 + 4 + 8 s of backoff, then the listener ends.
        code = listener.wait(timeout=60)
        _, stderr = listener.communicate()
    finally:
        if listener.poll() is None:
            listener.kill()
            listener.wait()
    assert code == 1
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert errors == [
        "error: the writer process failed to start 5 times in a row (last: exit code 1); "
        "stopping the listener"
    ], stderr
