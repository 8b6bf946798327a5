"""Ingest throughput over loopback: wrk against our listener and two yardsticks, alternating."""

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
from sqlalchemy.engine import make_url

from bench.events import generate, write_requests
from tests.support.postgres import PostgresServer, find_pg_bin, free_port
from tests.support.waiting import wait_until

SECRET = "whsec_bench_signing_secret_0123456789"
LUA = Path(__file__).with_name("post_events.lua")
RESULT = re.compile(
    r"RESULT requests=(\d+) duration_us=(\d+) p50_us=(\d+) p99_us=(\d+) "
    r"max_us=(\d+) non2xx=(\d+) socket_errors=(\d+)"
)


@dataclass
class Run:
    target: str
    round: int
    events_per_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    non_2xx: int
    socket_errors: int

    def line(self) -> str:
        """One round's figures, as printed while the bench runs."""
        return (
            f"  round {self.round} {self.target:20} {self.events_per_s:8.0f}/s "
            f"p50 {self.p50_ms:6.2f} ms p99 {self.p99_ms:6.2f} ms non-2xx {self.non_2xx}"
        )


def add_load_arguments(parser: argparse.ArgumentParser) -> None:
    """The wrk load's options, shared by `python -m bench` and `python -m bench.peer_bench`."""
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument(
        "--events",
        type=int,
        default=40_000,
        help="distinct events per round (more than a run can send)",
    )


def _server_command(
    target: str, port: int, workdir: Path, database_url: str | None
) -> tuple[list[str], dict[str, str]]:
    env = {**os.environ, "STRIPE_WEBHOOK_SECRET": SECRET}
    uvicorn = [
        sys.executable,
        "-m",
        "uvicorn",
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    if target == "bare":
        return [*uvicorn, "bench.yardsticks:bare_app"], env
    if target == "minimal":
        env["MINIMAL_DB"] = str(workdir / "minimal.db")
        return [*uvicorn, "bench.yardsticks:minimal_app"], env
    if target == "minimal-postgresql":
        assert database_url is not None
        env["MINIMAL_PG"] = (
            make_url(database_url)
            .set(drivername="postgresql")
            .render_as_string(hide_password=False)
        )
        return [*uvicorn, "bench.yardsticks:minimal_postgresql_app"], env
    env["DATABASE_URL"] = database_url or f"sqlite:///{workdir}/listener.db"
    return [
        sys.executable,
        "-m",
        "webhook_listener",
        "--port",
        str(port),
        "--log-level",
        "warning",
    ], env


def wait_ready(url: str, process: subprocess.Popen[bytes]) -> None:
    def answers() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        httpx.get(f"{url}/healthz", timeout=1)
        return True

    wait_until(answers, every=0.1, what="server started", ignoring=(httpx.TransportError,))


def wrk(url: str, requests_file: Path, *, duration: int, connections: int) -> str:
    """Load `url` with the pre-signed requests for `duration` seconds; wrk's output."""
    return subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(LUA), url],
        env={**os.environ, "THREADS": "2", "REQUESTS_FILE": str(requests_file)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def parse_run(out: str, target: str, round_number: int) -> Run:
    """The figures the Lua script printed."""
    match = RESULT.search(out)
    if not match:
        raise RuntimeError(f"wrk printed no result:\n{out}")
    requests, duration_us, p50, p99, worst, non2xx, errors = map(int, match.groups())
    return Run(
        target,
        round_number,
        requests / (duration_us / 1e6),
        p50 / 1000,
        p99 / 1000,
        worst / 1000,
        non2xx,
        errors,
    )


@contextmanager
def serving(target: str, database_url: str | None = None) -> Iterator[tuple[str, int]]:
    """One target's server, ready on a free port: its URL and process id, until the block ends."""
    workdir = Path(tempfile.mkdtemp(prefix="pmf-bench-"))
    port = free_port()
    command, env = _server_command(target, port, workdir, database_url)
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, process)
        yield url, process.pid
    finally:
        process.terminate()
        process.wait(timeout=30)
        shutil.rmtree(workdir, ignore_errors=True)


def run_target(
    target: str,
    requests_file: Path,
    *,
    round_number: int,
    duration: int,
    connections: int,
    database_url: str | None = None,
) -> Run:
    """Start one server, load it with wrk for `duration` seconds, stop it."""
    with serving(target, database_url) as (url, _):
        out = wrk(url, requests_file, duration=duration, connections=connections)
    return parse_run(out, target, round_number)


def run(
    *, rounds: int, duration: int, connections: int, events: int, postgres: bool
) -> dict[str, object]:
    """Alternate the targets `rounds` times; report medians and same-round ratios."""
    if shutil.which("wrk") is None:
        raise SystemExit("make bench needs wrk (apt-get install wrk)")
    server = None
    targets = ["bare", "minimal", "listener-sqlite"]
    if postgres and find_pg_bin():
        server = PostgresServer(find_pg_bin())  # type: ignore[arg-type]
        server.start()
        targets += ["minimal-postgresql", "listener-postgresql"]
    payload = generate(events)
    requests_file = Path(tempfile.mkdtemp(prefix="pmf-bench-")) / "requests.txt"
    runs: list[Run] = []
    try:
        for round_number in range(1, rounds + 1):
            mean_size = write_requests(payload, SECRET, requests_file)  # fresh timestamps
            for target in targets:
                url = (
                    server.create_database(f"bench_{target.split('-')[0]}_{round_number}")
                    if target.endswith("postgresql") and server
                    else None
                )
                result = run_target(
                    target,
                    requests_file,
                    round_number=round_number,
                    duration=duration,
                    connections=connections,
                    database_url=url,
                )
                runs.append(result)
                print(result.line(), flush=True)
    finally:
        if server:
            server.stop()
        shutil.rmtree(requests_file.parent, ignore_errors=True)

    def median(target: str, field: str) -> float:
        return statistics.median(getattr(r, field) for r in runs if r.target == target)

    def ratio(target: str, yardstick: str) -> float:
        per_round = [
            next(r.events_per_s for r in runs if r.target == target and r.round == n)
            / next(r.events_per_s for r in runs if r.target == yardstick and r.round == n)
            for n in range(1, rounds + 1)
        ]
        return statistics.median(per_round)

    summary = {
        target: {
            "events_per_s": median(target, "events_per_s"),
            "p50_ms": median(target, "p50_ms"),
            "p99_ms": median(target, "p99_ms"),
        }
        for target in targets
    }
    # Each listener against the minimal receiver on the same database.
    summary["listener-sqlite"]["ratio_to_minimal"] = ratio("listener-sqlite", "minimal")
    if "listener-postgresql" in summary:
        summary["listener-postgresql"]["ratio_to_minimal"] = ratio(
            "listener-postgresql", "minimal-postgresql"
        )
    return {
        "mean_event_bytes": round(mean_size),
        "connections": connections,
        "duration_s": duration,
        "rounds": rounds,
        "summary": summary,
        "runs": [asdict(r) for r in runs],
    }
