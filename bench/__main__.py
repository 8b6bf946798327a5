"""`python -m bench`: ingest throughput and the read path at scale; a table and JSON results."""

import argparse
import json
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from finance_core import migrate
from finance_core.db import make_engine
from tests.support.postgres import PostgresServer, find_pg_bin

RESULTS = Path(__file__).with_name("results")
INGEST_TARGET_RATIO = 0.85
INGEST_TARGET_P99_MS = 20
READ_TARGET_P95_MS = 10


def mark(met: bool) -> str:
    return "met" if met else "NOT met"


def bench_ingest(args: argparse.Namespace) -> dict[str, object]:
    from bench import ingest

    print(
        f"Ingest: {args.rounds} alternating rounds of {args.duration}s, "
        f"{args.connections} connections",
        flush=True,
    )
    result = ingest.run(
        rounds=args.rounds,
        duration=args.duration,
        connections=args.connections,
        events=args.events,
        postgres=not args.no_postgres,
    )
    print(f"\n{'target':22} {'events/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'x minimal':>10}")
    for target, figures in result["summary"].items():  # type: ignore[union-attr]
        ratio = figures.get("ratio_to_minimal")
        print(
            f"{target:22} {figures['events_per_s']:10.0f} {figures['p50_ms']:8.2f} "
            f"{figures['p99_ms']:8.2f} {'' if ratio is None else f'{ratio:10.2f}'}"
        )
        if ratio is not None:
            print(
                f"  target >= {INGEST_TARGET_RATIO:.0%} of minimal: "
                f"{mark(ratio >= INGEST_TARGET_RATIO)}; p99 < {INGEST_TARGET_P99_MS} ms: "
                f"{mark(figures['p99_ms'] < INGEST_TARGET_P99_MS)}"
            )
    return result


def bench_read_path(args: argparse.Namespace) -> dict[str, object]:
    from bench import read_path

    results: dict[str, object] = {}
    backends = ["sqlite"] + ([] if args.no_postgres or not find_pg_bin() else ["postgresql"])
    for backend in backends:
        server = None
        workdir = Path(tempfile.mkdtemp(prefix="pmf-read-"))
        if backend == "sqlite":
            url = f"sqlite:///{workdir}/scale.db"
        else:
            server = PostgresServer(find_pg_bin())  # type: ignore[arg-type]
            server.start()
            url = server.create_database("scale")
        engine = make_engine(url)
        try:
            migrate.upgrade(engine)
            print(
                f"\nRead path on {backend}: loading {args.subscriptions:,} subscriptions and "
                f"{args.scale_events:,} events...",
                flush=True,
            )
            seconds = read_path.fill(
                engine, subscriptions_n=args.subscriptions, events_n=args.scale_events
            )
            figures = read_path.measure(engine)
        finally:
            engine.dispose()
            if server:
                server.stop()
        print(f"  loaded in {seconds:.0f} s")
        print(f"  {'query':22} {'p50 ms':>8} {'p95 ms':>8}")
        for name, timing in figures.items():
            print(f"  {name:22} {timing['p50_ms']:8.3f} {timing['p95_ms']:8.3f}")
        worst = max(
            figures["subscription-summary"]["p95_ms"], figures["stripe-sync-status"]["p95_ms"]
        )
        print(
            f"  p95 < {READ_TARGET_P95_MS} ms: {mark(worst < READ_TARGET_P95_MS)}; within 2x of "
            f"healthz: {mark(worst <= 2 * max(figures['healthz']['p95_ms'], 0.001))}"
        )
        results[backend] = {"load_seconds": seconds, "queries": figures}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--only", choices=["ingest", "read-path"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument(
        "--events",
        type=int,
        default=40_000,
        help="distinct events per round (more than a run can send)",
    )
    parser.add_argument("--subscriptions", type=int, default=1_000_000)
    parser.add_argument("--scale-events", type=int, default=10_000_000)
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()

    report: dict[str, object] = {"started": datetime.now(UTC).isoformat(), "args": vars(args)}
    if args.only in (None, "ingest"):
        report["ingest"] = bench_ingest(args)
    if args.only in (None, "read-path"):
        report["read_path"] = bench_read_path(args)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"bench-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(report, indent=2, default=str))
    print(f"\nraw figures: {path}")


if __name__ == "__main__":
    main()
