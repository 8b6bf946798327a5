"""`python -m bench.resolver_cpu`: CPU time of the thin-event resolver per fetched object.

A store (a SQLite file, and a database on a PostgreSQL server of its own when the binaries are
installed) holds N pending thin events about N subscriptions, queued through the listener's own
ingest path; the stand-in for Stripe's API serves the subscriptions in Stripe's shape from a
child process, so that its CPU is not counted. A `Resolver` then runs in this process, cycle
after cycle, until every event is settled. Measured: this process's CPU time
(`time.process_time`: every thread, the main thread's claims and the fetch threads' requests,
handlers and settling writes; the `stripe` library, SQLAlchemy and SQLite run in it, a
PostgreSQL server's own processes do not) divided by the objects fetched, and the write
transactions the resolver committed. Nothing else runs in this process meanwhile, so the whole
process's CPU time is the resolver's; it does not depend on the machine's load as wall time
does. `--profile` runs one more round per backend under cProfile (every fetch task and cycle
profiled, merged) and prints the top costs; `--http-floor` measures only the HTTP clients'
CPU per request against the same stand-in.
"""

import argparse
import cProfile
import http.client
import io
import json
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import stripe
from sqlalchemy import Engine, event, func, select

from finance_core.feed.events import parse_payload
from finance_core.feed.ingest import Delivery, ingest_batch
from finance_core.feed.resolver import CycleReport, Resolver
from finance_core.feed.thin_fetching import fetching_client
from finance_core.settings import load_settings
from finance_core.store import migrate
from finance_core.store.db import WRITE_OPTION, make_engine
from finance_core.store.models import webhook_events
from tests.support import stripe_factory as sf
from tests.support.postgres import PostgresServer, find_pg_bin
from tests.support.stripe_api import API_KEY, running_stand_in

SECRET = "whsec_bench_signing_secret_0123456789"
TARGET_MS = 1.0
QUEUE_CHUNK = 200


@dataclass
class Run:
    backend: str
    objects: int
    cpu_ms_per_object: float
    main_thread_ms_per_object: float  # claims and the batched writes; the rest is fetching
    wall_s: float
    write_transactions: int
    held_p99_ms: float
    held_max_ms: float
    cycles: int


def subscriptions(objects: int) -> list[dict[str, Any]]:
    return [
        sf.subscription(f"sub_cpu_{n:05d}", "active", f"prod_cpu_{n % 20:02d}")
        for n in range(objects)
    ]


def serve(objects_file: str, keep_alive: bool) -> None:
    """The child process: the stand-in serving these subscriptions until stdin closes."""
    with running_stand_in(keep_alive=keep_alive) as api:
        for obj in json.loads(Path(objects_file).read_text()):
            api.put("subscriptions", obj)
        print(api.url, flush=True)
        sys.stdin.read()


@contextmanager
def stand_in_process(
    workdir: Path, objects: list[dict[str, Any]], keep_alive: bool
) -> Iterator[str]:
    """The stand-in in a child process (its CPU is not ours); yields its URL."""
    objects_file = workdir / "objects.json"
    objects_file.write_text(json.dumps(objects))
    child = subprocess.Popen(
        [sys.executable, "-m", "bench.resolver_cpu", "--serve", str(objects_file)]
        + ([] if keep_alive else ["--close-connections"]),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        yield child.stdout.readline().strip()
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(timeout=10)


def queue_thin_events(engine: Engine, objects: list[dict[str, Any]]) -> None:
    """One pending thin event per object, old enough for a fetch now to cover it."""
    now = datetime.now(UTC)
    deliveries = []
    for obj in objects:
        payload = sf.thin_event(
            "v1.customer.subscription.updated", "subscription", obj["id"], created=time.time() - 60
        )
        deliveries.append(
            Delivery(parse_payload(payload, received_at=now), now, raw_payload=json.dumps(payload))
        )
    for start in range(0, len(deliveries), QUEUE_CHUNK):
        ingest_batch(engine=engine, deliveries=deliveries[start : start + QUEUE_CHUNK])


def pending(engine: Engine) -> int:
    with engine.connect() as conn:
        query = select(func.count()).where(webhook_events.c.status == "pending")
        return int(conn.execute(query).scalar_one())


class WriteTransactions:
    """The resolver's write transactions: how many, and how long each held the write lock
    (wall time from after BEGIN to COMMIT: on SQLite the lock is taken by BEGIN IMMEDIATE)."""

    def __init__(self, engine: Engine) -> None:
        self.held_s: list[float] = []
        event.listen(engine, "begin", self._begin)
        event.listen(engine, "commit", self._end)
        event.listen(engine, "rollback", self._end)

    def _begin(self, conn: Any) -> None:
        if conn.get_execution_options().get(WRITE_OPTION):
            conn.info["bench_began"] = time.perf_counter()

    def _end(self, conn: Any) -> None:
        began = conn.info.pop("bench_began", None)
        if began is not None:
            self.held_s.append(time.perf_counter() - began)

    def p99_ms(self) -> float:
        if len(self.held_s) < 2:
            return 1000 * max(self.held_s, default=0.0)
        return 1000 * statistics.quantiles(self.held_s, n=100, method="inclusive")[98]


def profiled_pool(resolver: Resolver, profiles: list[cProfile.Profile]) -> None:
    """Profile every task the resolver's fetch threads run (cProfile sees one thread)."""
    submit = resolver.pool.submit

    def profiled(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        def run() -> Any:
            profile = cProfile.Profile(time.thread_time)
            try:
                return profile.runcall(fn, *args, **kwargs)
            finally:
                profiles.append(profile)

        return submit(run)

    resolver.pool.submit = profiled  # type: ignore[method-assign]


def run_resolver(
    backend: str, engine: Engine, resolver: Resolver, expected: int, profile: bool = False
) -> tuple[Run, list[cProfile.Profile]]:
    profiles: list[cProfile.Profile] = []
    if profile:
        profiled_pool(resolver, profiles)
    transactions = WriteTransactions(engine)
    total = CycleReport()
    cycles = 0
    main_thread_cpu = 0.0
    started_cpu, started = time.process_time(), time.monotonic()
    try:
        while total.settled_by_fetch + total.settled_without_fetch < expected:
            if time.monotonic() - started > 120 + expected / 10:
                raise SystemExit(f"{backend}: not all settled: {total}")
            cycle_started = time.thread_time()
            cycle_profile = cProfile.Profile(time.thread_time) if profile else None
            if cycle_profile is not None:
                report = cycle_profile.runcall(resolver.run_once)
                profiles.append(cycle_profile)
            else:
                report = resolver.run_once()
            main_thread_cpu += time.thread_time() - cycle_started
            cycles += 1
            for name in vars(total):
                setattr(total, name, getattr(total, name) + getattr(report, name))
            if report.claimed == 0 or report.claimed == report.waiting:
                time.sleep(0.05)
        cpu, wall = time.process_time() - started_cpu, time.monotonic() - started
    finally:
        resolver.close()
    left = pending(engine)
    engine.dispose()
    if left or total.fetched_objects != expected or total.failed:
        raise SystemExit(f"{backend}: {left} pending, {total}")
    run = Run(
        backend=backend,
        objects=expected,
        cpu_ms_per_object=1000 * cpu / expected,
        main_thread_ms_per_object=1000 * main_thread_cpu / expected,
        wall_s=wall,
        write_transactions=len(transactions.held_s),
        held_p99_ms=transactions.p99_ms(),
        held_max_ms=1000 * max(transactions.held_s, default=0.0),
        cycles=cycles,
    )
    return run, profiles


def top_costs(profiles: list[cProfile.Profile], lines: int) -> str:
    out = io.StringIO()
    stats = pstats.Stats(profiles[0], stream=out)
    for profile in profiles[1:]:
        stats.add(profile)
    stats.strip_dirs().sort_stats("tottime").print_stats(lines)
    stats.sort_stats("cumulative").print_stats(lines)
    return out.getvalue()


def http_floor(api_url: str, objects: list[dict[str, Any]]) -> None:
    """CPU per request of the HTTP client alone: the library's `raw_request` through the
    resolver's client (`PycurlClient`; the resolver's fetch without the resolver) and through
    `HTTPXClient`, plain httpx, and the standard library's http.client, one request after
    another on a kept connection, each answer parsed."""
    paths = [f"/v1/subscriptions/{obj['id']}" for obj in objects]
    library = fetching_client(
        load_settings(
            database_url="sqlite://",
            stripe_webhook_secret=SECRET,
            stripe_api_key=API_KEY,
            stripe_api_base=api_url,
            _env_file=None,
        )
    )
    httpx_library = stripe.StripeClient(
        API_KEY,
        base_addresses={"api": api_url},
        max_network_retries=0,
        http_client=stripe.HTTPXClient(timeout=10, allow_sync_methods=True),
    )
    plain = httpx.Client(timeout=10)
    split = urlsplit(api_url)
    kept = http.client.HTTPConnection(split.hostname or "", split.port, timeout=10)

    def stdlib(path: str) -> Any:
        kept.request("GET", path, headers={"Authorization": f"Bearer {API_KEY}"})
        return json.loads(kept.getresponse().read())

    clients: dict[str, Callable[[str], Any]] = {
        "stripe raw_request (PycurlClient)": lambda path: library.raw_request("get", path).data,
        "stripe raw_request (HTTPXClient)": lambda path: (
            httpx_library.raw_request("get", path).data
        ),
        "httpx.Client.get": lambda path: plain.get(
            api_url + path, headers={"Authorization": f"Bearer {API_KEY}"}
        ).json(),
        "http.client, kept connection": stdlib,
    }
    for name, get in clients.items():
        figures = []
        for _ in range(3):
            started = time.process_time()
            for path in paths:
                get(path)
            figures.append(1000 * (time.process_time() - started) / len(paths))
        print(f"  {name:34} {statistics.median(figures):.2f} ms CPU per request (median of 3)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rps", type=int, default=200, help="STRIPE_API_MAX_RPS")
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--profile", action="store_true", help="one more round under cProfile")
    parser.add_argument(
        "--close-connections",
        action="store_true",
        help="the stand-in closes each connection after its answer (Stripe's API keeps them)",
    )
    parser.add_argument(
        "--http-floor", action="store_true", help="only the HTTP clients' CPU per request"
    )
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, keep_alive=not args.close_connections)
        return

    workdir = Path(tempfile.mkdtemp(prefix="pmf-resolver-cpu-"))
    if args.http_floor:
        with stand_in_process(workdir, subscriptions(args.objects), True) as api_url:
            http_floor(api_url, subscriptions(args.objects))
        shutil.rmtree(workdir, ignore_errors=True)
        return
    server = None
    backends = ["sqlite"]
    pg_bin = find_pg_bin()
    if not args.no_postgres and pg_bin is not None:
        server = PostgresServer(pg_bin)
        server.start()
        backends.append("postgresql")
    objects = subscriptions(args.objects)
    runs: list[Run] = []
    try:
        with stand_in_process(workdir, objects, not args.close_connections) as api_url:
            for number in range(1, args.rounds + 1 + (1 if args.profile else 0)):
                profile = args.profile and number > args.rounds
                for backend in backends:
                    name = f"resolver_{backend}_{number}"
                    url = (
                        server.create_database(name)
                        if backend == "postgresql" and server
                        else f"sqlite:///{workdir}/{name}.db"
                    )
                    engine = make_engine(url)
                    migrate.upgrade(engine)
                    queue_thin_events(engine, objects)
                    settings = load_settings(
                        database_url=url,
                        stripe_webhook_secret=SECRET,
                        stripe_api_key=API_KEY,
                        stripe_api_base=api_url,
                        stripe_api_max_rps=args.rps,
                        _env_file=None,
                    )
                    resolver = Resolver(engine=engine, settings=settings)
                    run, profiles = run_resolver(
                        backend, engine, resolver, len(objects), profile=profile
                    )
                    label = "profiled" if profile else f"round {number}"
                    print(
                        f"  {label:9} {backend:10} {run.cpu_ms_per_object:5.2f} ms CPU/object, "
                        f"{run.write_transactions} write transactions for {run.objects} "
                        f"objects (held p99 {run.held_p99_ms:.1f} ms, max {run.held_max_ms:.1f}) "
                        f"in {run.cycles} cycles, {run.wall_s:.1f} s",
                        flush=True,
                    )
                    if profile:
                        print(top_costs(profiles, 25))
                    else:
                        runs.append(run)
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    for backend in backends:
        mine = [run for run in runs if run.backend == backend]
        if not mine:
            continue
        median = statistics.median(run.cpu_ms_per_object for run in mine)
        transactions = statistics.median(run.write_transactions for run in mine)
        held = statistics.median(run.held_p99_ms for run in mine)
        main = statistics.median(run.main_thread_ms_per_object for run in mine)
        met = "met" if median <= TARGET_MS else "NOT met"
        print(
            f"{backend}: median {median:.2f} ms CPU per fetched object over {len(mine)} rounds "
            f"of {args.objects} (target <= {TARGET_MS} ms: {met}; {main:.2f} ms of it in the "
            f"cycle's thread: claims and writes); median "
            f"{transactions:.0f} write transactions, held p99 {held:.1f} ms"
        )


if __name__ == "__main__":
    threading.current_thread().name = "resolver-cpu"
    main()
