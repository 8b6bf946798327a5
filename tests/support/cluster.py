"""The production layout on loopback: HAProxy with deploy/haproxy.cfg in front of listener
processes started with the command line of deploy/finance-listener@.service, and dashboards
started with that of deploy/finance-dashboard.service.

Only ports and paths are substituted: the unit's %i (its port), its interpreter (this venv's)
and its working directory (this checkout). The settings the unit would read from its
EnvironmentFile are given as the processes' environment.
"""

import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.support.postgres import free_port
from tests.support.servers import wait_gone, writer_of
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
LISTENER_UNIT = DEPLOY / "finance-listener@.service"
DASHBOARD_UNIT = DEPLOY / "finance-dashboard.service"
HAPROXY_CONFIG = DEPLOY / "haproxy.cfg"
LISTENERS = 2  # the servers deploy/haproxy.cfg names


def unit_setting(unit: Path, key: str) -> str:
    """The value of `key=` in a systemd unit file (the last one, as systemd reads it)."""
    values = [
        line.split("=", 1)[1].strip()
        for line in unit.read_text().splitlines()
        if line.startswith(f"{key}=")
    ]
    if not values:
        raise AssertionError(f"{unit.name} has no {key}=")
    return values[-1]


def unit_command(unit: Path, instance: str) -> list[str]:
    """ExecStart= of `unit` for `instance`, with this venv's interpreter for the unit's."""
    command = [
        part.replace("%i", instance) for part in shlex.split(unit_setting(unit, "ExecStart"))
    ]
    if not Path(command[0]).name.startswith("python"):
        raise AssertionError(f"{unit.name} does not start a Python module: {command}")
    return [sys.executable, *command[1:]]


@dataclass
class Listener:
    """One listener process, started as its unit says, in a process group of its own."""

    name: str  # the server's name in haproxy.cfg
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def writer_pid(self) -> int | None:
        return writer_of(self.process.pid)

    def kill_with_writer(self) -> None:
        """kill -9 of the listener and its writer process, as a machine crash would."""
        writer = self.writer_pid()
        self.process.send_signal(signal.SIGKILL)
        if writer is not None:
            os.kill(writer, signal.SIGKILL)
            assert wait_gone(writer)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        """SIGTERM to the whole group, as systemd stops the unit (KillMode=control-group)."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=70)  # the unit's TimeoutStopSec
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


@dataclass
class Cluster:
    """HAProxy's address, the listeners behind it, and what they share."""

    url: str
    listeners: list[Listener]
    database_url: str
    redis_url: str
    admin_socket: Path

    def server_states(self) -> dict[str, str]:
        """Each listener's state in HAProxy (UP, DOWN, ...), from its admin socket."""
        with socket.socket(socket.AF_UNIX) as admin:
            admin.connect(str(self.admin_socket))
            admin.sendall(b"show stat\n")
            answer = b"".join(iter(lambda: admin.recv(65536), b"")).decode()
        lines = answer.lstrip("# ").splitlines()
        header = lines[0].split(",")
        rows = [dict(zip(header, line.split(","), strict=False)) for line in lines[1:] if line]
        return {
            row["svname"]: row["status"].split()[0]
            for row in rows
            if row.get("pxname") == "listeners" and row["svname"] not in ("BACKEND", "FRONTEND")
        }

    def wait_states(self, expected: dict[str, str], seconds: float = 30) -> None:
        wait_until(
            lambda: self.server_states() == expected,
            timeout=seconds,
            every=0.1,
            what=f"HAProxy seeing {expected}",
        )


def start_listener_unit(name: str, env: dict[str, str], workdir: Path) -> Listener:
    port = free_port()
    log = workdir / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            unit_command(LISTENER_UNIT, str(port)),
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group, as its own unit would be
        )
    listener = Listener(name, port, process, log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"{name} exited: {log.read_text()}")
        try:
            if httpx.get(f"{listener.url}/healthz", timeout=1).status_code == 200:
                return listener
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    listener.stop()
    raise AssertionError(f"{name} did not become healthy: {log.read_text()}")


def start_listener_units(
    count: int, env: dict[str, str], workdir: Path, stack: ExitStack
) -> list[Listener]:
    """`count` healthy listeners, listener1 on, each stopped when `stack` closes."""
    listeners = []
    for n in range(1, count + 1):
        listener = start_listener_unit(f"listener{n}", env, workdir)
        stack.callback(listener.stop)
        listeners.append(listener)
    return listeners


@contextmanager
def running_dashboard_unit(name: str, env: dict[str, str], workdir: Path) -> Iterator[str]:
    """A dashboard process started as its unit says, on a free port instead of 8501: its URL."""
    port = free_port()
    command = unit_command(DASHBOARD_UNIT, "")
    command[command.index("--server.port") + 1] = str(port)
    log = workdir / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise AssertionError(f"{name} exited: {log.read_text()}")
            try:
                if httpx.get(f"{url}/_stcore/health", timeout=2).text == "ok":
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"{name} did not start: {log.read_text()}")
            time.sleep(0.2)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)  # the unit's TimeoutStopSec
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@contextmanager
def haproxy(binary: str, listeners: list[Listener], workdir: Path) -> Iterator[tuple[str, Path]]:
    """`haproxy -f deploy/haproxy.cfg` in the foreground: its URL and admin socket."""
    port = free_port()
    admin = workdir / "haproxy.sock"
    env = {
        **os.environ,
        "FINANCE_PROXY_BIND": f"127.0.0.1:{port}",
        "FINANCE_PROXY_SOCKET": str(admin),
        **{
            f"FINANCE_LISTENER{n}": f"127.0.0.1:{server.port}"
            for n, server in enumerate(listeners, 1)
        },
    }
    log = workdir / "haproxy.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [binary, "-db", "-f", str(HAPROXY_CONFIG)], env=env, stdout=out, stderr=out
        )
    try:
        deadline = time.monotonic() + 30
        while not admin.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"haproxy did not start: {log.read_text()}")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}", admin
    finally:
        process.terminate()
        process.wait(timeout=30)


@contextmanager
def cluster(
    *, haproxy_binary: str, env: dict[str, str], workdir: Path, database_url: str, redis_url: str
) -> Iterator[Cluster]:
    """HAProxy in front of LISTENERS listener processes on one database and one Redis."""
    env = {**env, "DATABASE_URL": database_url, "RATE_LIMIT_STORAGE_URI": redis_url}
    with ExitStack() as stack:
        listeners = start_listener_units(LISTENERS, env, workdir, stack)
        url, admin = stack.enter_context(haproxy(haproxy_binary, listeners, workdir))
        running = Cluster(url, listeners, database_url, redis_url, admin)
        running.wait_states({listener.name: "UP" for listener in listeners})
        yield running
