"""Ingest through HAProxy (deploy/haproxy.cfg) in front of two listeners against one, on PostgreSQL.

The same wrk load as `bench.ingest`, in alternating rounds, each target on a fresh database of
the tests' PostgreSQL server; listeners are started as deploy/finance-listener@.service says
(tests/support/cluster.py). "one listener" is the same file with both server lines on one
listener, so that the proxy's cost is in both. Then, per round, a longer run through HAProxy
with two listeners in which one listener and its writer are killed (-9) half way: the p99 of
the acks, and how many requests were not answered 2xx.
"""

import os
import shutil
import statistics
import tempfile
import threading
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path

from sqlalchemy import create_engine

from bench.events import generate, write_requests
from bench.ingest import LUA, SECRET, Run, parse_run, wrk
from tests.support.cluster import haproxy, start_listener_units
from tests.support.postgres import PostgresServer, deadlocks, find_pg_bin
from tests.support.system_packages import which

TARGETS = {"one listener": 1, "two listeners": 2}
TARGET_RATIO = 1.0


def _through_haproxy(
    haproxy_binary: str,
    listeners_n: int,
    server: PostgresServer,
    database: str,
    requests_file: Path,
    *,
    duration: int,
    connections: int,
    crash_at: float | None = None,
) -> str:
    """wrk through HAProxy to `listeners_n` fresh listeners; kill one at `crash_at` seconds."""
    env = {
        **os.environ,
        "DATABASE_URL": server.create_database(database),
        "STRIPE_WEBHOOK_SECRET": SECRET,
    }
    workdir = Path(tempfile.mkdtemp(prefix="pmf-scale-"))
    try:
        with ExitStack() as stack:
            listeners = start_listener_units(listeners_n, env, workdir, stack)
            servers = listeners if listeners_n == 2 else listeners * 2
            url, _ = stack.enter_context(haproxy(haproxy_binary, servers, workdir))
            if crash_at is None:
                return wrk(url, requests_file, duration=duration, connections=connections)
            timer = threading.Timer(crash_at, listeners[0].kill_with_writer)
            timer.start()
            try:
                return wrk(url, requests_file, duration=duration, connections=connections)
            finally:
                timer.cancel()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def deadlocks_in(database_url: str) -> int:
    """The deadlocks PostgreSQL counted in one database (its listeners stopped: all flushed)."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            return deadlocks(conn)
    finally:
        engine.dispose()


def run(
    *,
    rounds: int,
    duration: int,
    connections: int,
    events: int,
    subscriptions: int = 5000,
    plans: int = 20,
) -> dict[str, object]:
    """Alternate the targets `rounds` times, then crash one listener in a run of each round.

    `subscriptions` and `plans` set the mix: fewer of each, more batches touching the same
    count and history rows (2,000 and 6 is the harder mix of SPEC 20's issue)."""
    haproxy_binary = which("haproxy")
    if shutil.which("wrk") is None or haproxy_binary is None or find_pg_bin() is None:
        raise SystemExit("the scale-out bench needs wrk, haproxy and PostgreSQL (make bench)")
    server = PostgresServer(find_pg_bin())  # type: ignore[arg-type]
    server.start()
    payload = generate(events, subscriptions=subscriptions, plans=plans)
    requests_file = Path(tempfile.mkdtemp(prefix="pmf-bench-")) / "requests.txt"
    runs: list[Run] = []
    crashes: list[Run] = []
    deadlocks_by_target: dict[str, int] = {target: 0 for target in TARGETS}
    try:
        for round_number in range(1, rounds + 1):
            write_requests(payload, SECRET, requests_file)  # fresh timestamps
            for target, listeners_n in TARGETS.items():
                database = f"scale_{listeners_n}_{round_number}"
                out = _through_haproxy(
                    haproxy_binary,
                    listeners_n,
                    server,
                    database,
                    requests_file,
                    duration=duration,
                    connections=connections,
                )
                runs.append(parse_run(out, target, round_number))
                found = deadlocks_in(server.url(database))
                deadlocks_by_target[target] += found
                print(f"{runs[-1].line()}  deadlocks {found}", flush=True)
            write_requests(payload, SECRET, requests_file)
            out = _through_haproxy(
                haproxy_binary,
                2,
                server,
                f"scale_crash_{round_number}",
                requests_file,
                duration=2 * duration,
                connections=connections,
                crash_at=duration,
            )
            crashes.append(parse_run(out, "one killed mid-run", round_number))
            print(crashes[-1].line(), flush=True)
    finally:
        server.stop()
        shutil.rmtree(requests_file.parent, ignore_errors=True)

    def median(target: str, name: str) -> float:
        return statistics.median(getattr(r, name) for r in runs if r.target == target)

    ratios = [
        next(r.events_per_s for r in runs if r.target == "two listeners" and r.round == n)
        / next(r.events_per_s for r in runs if r.target == "one listener" and r.round == n)
        for n in range(1, rounds + 1)
    ]
    summary = {
        target: {name: median(target, name) for name in ("events_per_s", "p50_ms", "p99_ms")}
        for target in TARGETS
    }
    summary["two listeners"]["ratio_to_one"] = statistics.median(ratios)
    for target, found in deadlocks_by_target.items():
        summary[target]["deadlocks"] = found
    summary["one killed mid-run"] = {
        "events_per_s": statistics.median(r.events_per_s for r in crashes),
        "p50_ms": statistics.median(r.p50_ms for r in crashes),
        "p99_ms": statistics.median(r.p99_ms for r in crashes),
        "max_ms": statistics.median(r.max_ms for r in crashes),
        "non_2xx": sum(r.non_2xx for r in crashes),
        "socket_errors": sum(r.socket_errors for r in crashes),
    }
    return {
        "cpus": os.cpu_count(),
        "connections": connections,
        "duration_s": duration,
        "rounds": rounds,
        "subscriptions": subscriptions,
        "plans": plans,
        "wrk_script": str(LUA),
        "summary": summary,
        "ratios": ratios,
        "runs": [asdict(r) for r in runs + crashes],
    }
