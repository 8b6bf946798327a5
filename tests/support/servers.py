"""Servers for the tests: the app in-process on a thread, or the listener as a real process."""

import ipaddress
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from prometheus_client.parser import text_string_to_metric_families

from tests.support.postgres import free_port
from tests.support.stripe_factory import SECRET
from tests.support.waiting import NotWithin, wait_until


class ThreadedServer:
    """Serve an ASGI app on a free loopback port until stop()."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            access_log=False,
            lifespan="on",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "ThreadedServer":
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def start_listener(env: dict[str, str], port: int, *options: str) -> subprocess.Popen[str]:
    """`python -m webhook_listener` as a real process; its output kept for the assertions."""
    command = [sys.executable, "-m", "webhook_listener", "--port", str(port)]
    return subprocess.Popen(
        [*command, "--log-level", "warning", *options],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_healthy(url: str, process: subprocess.Popen[str]) -> None:
    """Until the process answers /healthz with 200; its stderr if it exits first."""

    def healthy() -> bool:
        if process.poll() is not None:
            raise AssertionError(
                f"listener exited: {process.stderr.read() if process.stderr else ''}"
            )
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200

    wait_until(healthy, every=0.1, what="listener healthy", ignoring=(httpx.TransportError,))


def process_ids() -> list[int]:
    """Every process running now (from /proc)."""
    return [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]


def process_stat(pid: int) -> list[str]:
    """/proc/PID/stat after the command name: [state, parent pid, ...] (proc(5), fields 3 on).

    Raises OSError once the process is gone.
    """
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def child_processes(parent_pid: int) -> dict[int, bytes]:
    """The processes whose parent is `parent_pid`, with their command lines (from /proc)."""
    children = {}
    for pid in process_ids():
        try:
            if int(process_stat(pid)[1]) == parent_pid:
                children[pid] = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue  # it ended meanwhile
    return children


def writer_of(listener_pid: int) -> int | None:
    """The pid of the writer process a listener process started (webhook_listener/writer.py)."""
    return child_running(listener_pid, b"webhook_listener.writer_process")


def child_running(parent_pid: int, module: bytes) -> int | None:
    """The pid of a child of `parent_pid` whose command line names `module`, if any."""
    for pid, command in child_processes(parent_pid).items():
        if module in command:
            return pid
    return None


def wait_gone(pid: int, timeout: float = 30) -> bool:
    """Whether process `pid` ends (or is a zombie) within `timeout` seconds."""

    def gone() -> bool:
        try:
            return process_stat(pid)[0] == "Z"
        except OSError:
            return True

    try:
        return wait_until(gone, timeout=timeout)
    except NotWithin:
        return False


class ListenerProcess:
    """`python -m webhook_listener` on a free port, as operators run it."""

    def __init__(self, database_url: str, *args: str, **env: str) -> None:
        self.port = free_port()
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("STRIPE_")},
            "DATABASE_URL": database_url,
            "STRIPE_WEBHOOK_SECRET": SECRET,
            **env,
        }
        self.args = args
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "ListenerProcess":
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "webhook_listener",
                "--port",
                str(self.port),
                "--log-level",
                "warning",
                *self.args,
            ],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a process group of its own, as a service manager gives
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.05)
        raise AssertionError("the listener did not start")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def terminate_group(self) -> None:
        """SIGTERM to the listener and its writer at once, as systemd stops a service."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGTERM)

    def writer_pid(self) -> int | None:
        """The writer process the listener started (see webhook_listener/writer.py), if any."""
        assert self.process is not None
        return writer_of(self.process.pid)

    def worker_pid(self, timeout: float = 10) -> int | None:
        """The background worker it started (webhook_listener/background.py), once it runs."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while (pid := child_running(self.process.pid, b"background_process")) is None:
            if time.monotonic() > deadline:
                return None
            time.sleep(0.05)
        return pid

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


def listening_addresses(port: int) -> set[str]:
    """The addresses on which something listens at this TCP port (from /proc/net/tcp, tcp6)."""
    found = set()
    for table in ("tcp", "tcp6"):
        path = Path(f"/proc/net/{table}")
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, local_port = local.split(":")
            if state != "0A" or int(local_port, 16) != port:  # 0A: LISTEN
                continue
            raw = bytes.fromhex(address)  # 32-bit words in host (little-endian) order
            found.add(
                str(
                    ipaddress.ip_address(
                        b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
                    )
                )
            )
    return found


def job_rounds(url: str, job: str, token: str | None = None) -> float:
    """Rounds a listener's background job has finished, from its /metrics."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = httpx.get(f"{url}/metrics", headers=headers, timeout=30)
    response.raise_for_status()
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if (
                sample.name == "finance_background_rounds_total"
                and sample.labels["background_job"] == job
            ):
                return sample.value
    return 0.0


def wait_for_rounds(urls: list[str], job: str, more: int, token: str | None = None) -> None:
    """Until the job on each listener has finished `more` rounds after this call began.

    What stands for "nothing more happens": each worker had `more` chances to do it.
    """
    before = {url: job_rounds(url, job, token) for url in urls}
    wait_until(
        lambda: all(job_rounds(url, job, token) >= before[url] + more for url in urls),
        timeout=90,
        every=0.2,
        what=f"{more} more rounds of {job} on {len(urls)} listener(s)",
    )
