"""A burst of thin events beside full-rate snapshot ingest: acks, fetches, resolution, ingest cost.

Each round starts a listener on a fresh store twice, once with its background jobs off and once
with the thin-event resolver on, and gives both the same load: wrk posting snapshot events at
full rate for `duration` seconds while a second wrk posts a burst of thin events (a backlog,
created over the minutes before) about a set of subscriptions, each once, from `WARM_UP_S` into
the snapshot load (a burst arrives at a listener already at work; one that starts with a fresh
process measures that process's first second, a p99 of 67-307 ms, not the thin path). The
stand-in for Stripe's API answers at most `api_rps` requests a second (429 beyond), as Stripe's
limiter would. Measured: the thin acks' latency, the stand-in's requests (coalescing: one per
object), the time from the burst's start until nothing is pending, the snapshot ingest rate of
the two listeners within the round, and the CPU time of the listener's background worker and of
this process (the stand-in for Stripe answers here; Stripe's servers are elsewhere).
"""

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from bench.events import generate, sign, write_requests
from bench.ingest import LUA, parse_run, wait_ready
from bench.process_cpu import cpu_seconds
from finance_core.store import migrate
from finance_core.store.db import make_engine
from finance_core.store.models import webhook_events
from tests.support import stripe_factory as sf
from tests.support.postgres import PostgresServer, find_pg_bin, free_port
from tests.support.servers import child_running
from tests.support.stripe_api import API_KEY, running_stand_in

SECRET = "whsec_bench_signing_secret_0123456789"
ONCE_LUA = Path(__file__).with_name("post_once.lua")
ACK_TARGET_P99_MS = 20
RESOLVE_TARGET = 1.2  # x objects / rate
INGEST_TARGET = 0.9
WARM_UP_S = 5


@dataclass
class Round:
    round: int
    backend: str
    jobs: str
    snapshot_events_per_s: float
    snapshot_p99_ms: float
    thin_sent: int
    thin_p99_ms: float
    thin_non_2xx: int
    fetches: int
    most_fetches_in_a_second: int
    resolved_after_s: float | None
    worker_cpu_s: float
    bench_cpu_s: float


def _thin_requests(path: Path, events: int, objects: int) -> None:
    """`events` thin events about `objects` subscriptions, created over the last minutes."""
    now = time.time()
    with path.open("w") as out:
        for n in range(events):
            event = sf.thin_event(
                "v1.customer.subscription.updated",
                "subscription",
                f"sub_thin_{n % objects:05d}",
                event_id=f"evt_thin_bench_{int(now)}_{n:07d}",
                created=now - 300 + n * 200 / events,
            )
            body = json.dumps(event, separators=(",", ":"))
            out.write(f"{sign(body, SECRET)}\t{body}\n")


def _wrk(script: Path, url: str, requests_file: Path, *, duration: int, connections: int):
    return subprocess.Popen(
        ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script), url],
        env={**os.environ, "THREADS": "2", "REQUESTS_FILE": str(requests_file)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


THIN_TYPE = "v1.customer.subscription.updated"


def _watch_resolution(engine: Any, expected: int, started: float, stop: threading.Event) -> list:
    """Seconds from `started` until all `expected` thin events are stored and none pending."""
    found: list[float] = []
    events = webhook_events.c

    def watch() -> None:
        while not stop.is_set():
            with engine.connect() as conn:
                stored = conn.execute(
                    select(func.count()).select_from(webhook_events).where(events.type == THIN_TYPE)
                ).scalar_one()
                pending = conn.execute(
                    select(func.count())
                    .select_from(webhook_events)
                    .where(events.status == "pending")
                ).scalar_one()
            if stored >= expected and pending == 0:
                found.append(time.monotonic() - started)
                return
            stop.wait(0.1)

    threading.Thread(target=watch, daemon=True).start()
    return found


def one_round(
    *,
    round_number: int,
    backend: str,
    database_url: str,
    jobs: str,
    snapshot_file: Path,
    thin_file: Path,
    thin_events: int,
    objects: int,
    api_rps: int,
    duration: int,
    connections: int,
    resolve_timeout: float,
) -> Round:
    engine = make_engine(database_url)
    migrate.upgrade(engine)
    with running_stand_in() as api:
        api.max_rps = api_rps
        for n in range(objects):
            api.put("subscriptions", sf.subscription(f"sub_thin_{n:05d}", "active", "prod_thin"))
        port = free_port()
        env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "STRIPE_WEBHOOK_SECRET": SECRET,
            "STRIPE_API_KEY": API_KEY,
            "STRIPE_API_BASE": api.url,
            "STRIPE_API_MAX_RPS": str(api_rps),
        }
        command = [sys.executable, "-m", "webhook_listener", "--port", str(port)]
        process = subprocess.Popen(
            [*command, "--log-level", "warning", "--jobs", jobs],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_ready(url, process)
            worker = child_running(process.pid, b"webhook_listener.background_process")
            worker_cpu = cpu_seconds(worker) if worker else 0.0
            bench_cpu = time.process_time()
            snapshots = _wrk(LUA, url, snapshot_file, duration=duration, connections=connections)
            time.sleep(WARM_UP_S)
            started = time.monotonic()
            stop = threading.Event()
            resolved = _watch_resolution(engine, thin_events, started, stop)
            # Each of its requests once (wrk itself runs on until the duration is over).
            thin = _wrk(ONCE_LUA, url, thin_file, duration=duration - WARM_UP_S, connections=8)
            thin_run = parse_run(thin.communicate()[0], "thin", round_number)
            snapshot_run = parse_run(snapshots.communicate()[0], "snapshot", round_number)
            if jobs != "none":
                deadline = started + resolve_timeout
                while not resolved and time.monotonic() < deadline:
                    time.sleep(0.1)
            stop.set()
            resolved_after = resolved[0] if resolved else None
            worker_cpu = cpu_seconds(worker) - worker_cpu if worker else 0.0
            bench_cpu = time.process_time() - bench_cpu
        finally:
            process.terminate()
            process.wait(timeout=60)
            engine.dispose()
        fetches = len(api.retrieves("subscriptions"))
        return Round(
            round=round_number,
            backend=backend,
            jobs=jobs,
            snapshot_events_per_s=snapshot_run.events_per_s,
            snapshot_p99_ms=snapshot_run.p99_ms,
            thin_sent=thin_events,
            thin_p99_ms=thin_run.p99_ms,
            thin_non_2xx=thin_run.non_2xx,
            fetches=fetches,
            most_fetches_in_a_second=api.most_requests_in_a_second(),
            resolved_after_s=resolved_after,
            worker_cpu_s=worker_cpu,
            bench_cpu_s=bench_cpu,
        )


def run(
    *,
    rounds: int,
    duration: int,
    connections: int,
    thin_events: int,
    objects: int,
    api_rps: int,
    postgres: bool,
) -> dict[str, Any]:
    """Alternate resolver off and on, per backend; medians and same-round ratios."""
    if shutil.which("wrk") is None:
        raise SystemExit("make bench needs wrk (apt-get install wrk)")
    workdir = Path(tempfile.mkdtemp(prefix="pmf-thin-"))
    server = None
    backends = ["sqlite"]
    if postgres and find_pg_bin():
        server = PostgresServer(find_pg_bin())  # type: ignore[arg-type]
        server.start()
        backends.append("postgresql")
    snapshot_file, thin_file = workdir / "snapshots.txt", workdir / "thin.txt"
    payload = generate(40_000)
    results: list[Round] = []
    resolve_timeout = 3 * objects / api_rps + 30
    try:
        for round_number in range(1, rounds + 1):
            write_requests(payload, SECRET, snapshot_file)  # fresh timestamps
            _thin_requests(thin_file, thin_events, objects)
            for backend in backends:
                for jobs in ("none", "resolver"):
                    name = f"thin_{backend}_{jobs}_{round_number}"
                    url = (
                        server.create_database(name)
                        if backend == "postgresql" and server
                        else f"sqlite:///{workdir}/{name}.db"
                    )
                    result = one_round(
                        round_number=round_number,
                        backend=backend,
                        database_url=url,
                        jobs=jobs,
                        snapshot_file=snapshot_file,
                        thin_file=thin_file,
                        thin_events=thin_events,
                        objects=objects,
                        api_rps=api_rps,
                        duration=duration,
                        connections=connections,
                        resolve_timeout=resolve_timeout,
                    )
                    results.append(result)
                    resolved = result.resolved_after_s
                    print(
                        f"  round {round_number} {backend:10} jobs={jobs:8} "
                        f"snapshots {result.snapshot_events_per_s:6.0f}/s "
                        f"thin p99 {result.thin_p99_ms:6.2f} ms fetches {result.fetches} "
                        f"(max {result.most_fetches_in_a_second}/s) resolved in "
                        f"{'-' if resolved is None else f'{resolved:.1f}'} s; CPU worker "
                        f"{result.worker_cpu_s:.1f} s, stand-in and bench "
                        f"{result.bench_cpu_s:.1f} s",
                        flush=True,
                    )
    finally:
        if server:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    summary = {}
    for backend in backends:
        on = [r for r in results if r.backend == backend and r.jobs == "resolver"]
        off = {r.round: r for r in results if r.backend == backend and r.jobs == "none"}
        ratios = [r.snapshot_events_per_s / off[r.round].snapshot_events_per_s for r in on]
        resolved = [r.resolved_after_s for r in on if r.resolved_after_s is not None]
        summary[backend] = {
            "thin_ack_p99_ms": statistics.median(r.thin_p99_ms for r in on),
            "fetches": statistics.median(r.fetches for r in on),
            "most_fetches_in_a_second": max(r.most_fetches_in_a_second for r in on),
            "resolved_after_s": statistics.median(resolved) if len(resolved) == len(on) else None,
            "resolve_target_s": RESOLVE_TARGET * objects / api_rps,
            "snapshot_events_per_s_resolver_off": statistics.median(
                r.snapshot_events_per_s for r in off.values()
            ),
            "snapshot_events_per_s_resolver_on": statistics.median(
                r.snapshot_events_per_s for r in on
            ),
            "ingest_ratio": statistics.median(ratios),
        }
    return {
        "thin_events": thin_events,
        "objects": objects,
        "api_rps": api_rps,
        "duration_s": duration,
        "connections": connections,
        "summary": summary,
        "rounds": [asdict(r) for r in results],
    }


def targets(result: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(target, measured, met) for each backend."""
    rows = []
    objects = result["objects"]
    for backend, figures in result["summary"].items():
        rows.append(
            (
                f"{backend}: thin acks p99 < {ACK_TARGET_P99_MS} ms",
                f"{figures['thin_ack_p99_ms']:.2f} ms",
                figures["thin_ack_p99_ms"] < ACK_TARGET_P99_MS,
            )
        )
        rows.append(
            (
                f"{backend}: fetches = objects ({objects})",
                f"{figures['fetches']:.0f}",
                figures["fetches"] == objects,
            )
        )
        resolved = figures["resolved_after_s"]
        rows.append(
            (
                f"{backend}: all resolved within {figures['resolve_target_s']:.0f} s",
                "not all" if resolved is None else f"{resolved:.1f} s",
                resolved is not None and resolved <= figures["resolve_target_s"],
            )
        )
        rows.append(
            (
                f"{backend}: never over {result['api_rps']} requests/s at the stand-in",
                f"{figures['most_fetches_in_a_second']}",
                figures["most_fetches_in_a_second"] <= result["api_rps"],
            )
        )
        rows.append(
            (
                f"{backend}: snapshot ingest with resolver >= {INGEST_TARGET}x without",
                f"{figures['ingest_ratio']:.2f}x",
                figures["ingest_ratio"] >= INGEST_TARGET,
            )
        )
    return rows
