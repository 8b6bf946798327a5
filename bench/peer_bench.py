"""`python -m bench.peer_bench`: our listener against @supabase/stripe-sync-engine, same load.

The peer is `StripeSync.processWebhook` behind a minimal node:http server (bench/peer/server.mjs)
on a local PostgreSQL. Each round writes a fresh file of pre-signed events (the one
`python -m bench` uses) and loads, in turn, the peer, our listener on PostgreSQL and our listener
on SQLite, each on a fresh database, with the same wrk script. Ratios are taken within a round and
their median reported, because the machine is shared.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.events import generate, write_requests
from bench.ingest import (
    SECRET,
    Run,
    add_load_arguments,
    parse_run,
    run_target,
    wait_ready,
    wrk,
)
from tests.support.postgres import PostgresServer, find_pg_bin, free_port

PEER_DIR = Path(__file__).with_name("peer")
RESULTS = Path(__file__).with_name("results")
PACKAGE = "@supabase/stripe-sync-engine"
TARGET_RATIO = 4.0
PEER = "peer-stripe-sync"
OURS = ["listener-postgresql", "listener-sqlite"]
# The peer's tables the bench's events touch, to show what it keeps.
PEER_TABLES = ["subscriptions", "subscription_items", "invoices"]
OUR_TABLES = ["webhook_events", "subscriptions", "subscription_counts", "invoices"]


def mark(met: bool) -> str:
    return "met" if met else "NOT met"


def ensure_peer_installed() -> None:
    """node and npm present; `npm ci` (or install) in bench/peer when node_modules is missing."""
    missing = [tool for tool in ("node", "npm", "wrk") if shutil.which(tool) is None]
    if missing:
        raise SystemExit(
            f"the peer bench needs {' and '.join(missing)} on PATH "
            "(node >= 20 with npm, and wrk); skip it or install them"
        )
    if (PEER_DIR / "node_modules" / PACKAGE / "package.json").exists():
        return
    command = "ci" if (PEER_DIR / "package-lock.json").exists() else "install"
    print(f"npm {command} in {PEER_DIR} ...", flush=True)
    done = subprocess.run(
        ["npm", command, "--no-audit", "--no-fund"], cwd=PEER_DIR, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"npm {command} in {PEER_DIR} failed:\n{done.stderr[-2000:]}")


def _libpq_url(sqlalchemy_url: str) -> str:
    return sqlalchemy_url.replace("postgresql+psycopg://", "postgresql://", 1)


def _prepare_cluster(server: PostgresServer) -> None:
    """The peer's migration 0012 does `alter function ... owner to postgres` (Supabase's role)."""
    import psycopg

    with psycopg.connect(_libpq_url(server.url()), autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = 'postgres'").fetchone():
            conn.execute("CREATE ROLE postgres NOLOGIN")


def run_peer(
    requests_file: Path, *, round_number: int, duration: int, connections: int, database_url: str
) -> tuple[Run, list[str]]:
    """Start the peer on `database_url`, load it with wrk, stop it; its failure summary too."""
    workdir = Path(tempfile.mkdtemp(prefix="pmf-peer-"))
    port = free_port()
    log = workdir / "peer.log"
    env = {
        **os.environ,
        "DATABASE_URL": _libpq_url(database_url),
        "STRIPE_WEBHOOK_SECRET": SECRET,
    }
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            ["node", str(PEER_DIR / "server.mjs"), str(port)],
            cwd=PEER_DIR,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            try:
                wait_ready(url, process)  # answers only once its migrations have run
            except RuntimeError as exc:
                raise RuntimeError(f"the peer did not start: {log.read_text()[-2000:]}") from exc
            out = wrk(url, requests_file, duration=duration, connections=connections)
        finally:
            process.terminate()  # server.mjs prints its failure counts on SIGTERM
            process.wait(timeout=30)
    failures = [line for line in log.read_text().splitlines() if line.startswith("failures ")]
    shutil.rmtree(workdir, ignore_errors=True)
    return parse_run(out, PEER, round_number), failures


def _table_figures(database_url: str, schema: str, tables: list[str]) -> dict[str, Any]:
    """Rows and bytes (heap + indexes + TOAST) per table, after a run."""
    import psycopg

    figures: dict[str, Any] = {}
    with psycopg.connect(_libpq_url(database_url)) as conn:
        for table in tables:
            name = f'"{schema}"."{table}"'
            rows = conn.execute(f"SELECT count(*) FROM {name}").fetchone()
            size = conn.execute("SELECT pg_total_relation_size(%s::regclass)", (name,)).fetchone()
            figures[table] = {"rows": rows[0] if rows else 0, "bytes": size[0] if size else 0}
    return figures


def run(*, rounds: int, duration: int, connections: int, events: int) -> dict[str, Any]:
    """Alternate peer and listeners `rounds` times; medians and same-round ratios ours/peer."""
    ensure_peer_installed()
    pg_bin = find_pg_bin()
    if pg_bin is None:
        raise SystemExit("the peer bench needs PostgreSQL server binaries (initdb, pg_ctl)")
    server = PostgresServer(pg_bin)
    server.start()
    targets = [PEER, *OURS]
    requests_file = Path(tempfile.mkdtemp(prefix="pmf-peer-")) / "requests.txt"
    runs: list[Run] = []
    peer_failures: dict[int, list[str]] = {}
    stored: dict[str, list[dict[str, Any]]] = {PEER: [], "listener-postgresql": []}
    try:
        _prepare_cluster(server)
        for round_number in range(1, rounds + 1):
            mean_size = write_requests(generate(events), SECRET, requests_file)
            # Rotate the order so that no target always runs first (or last) in a round.
            shift = (round_number - 1) % len(targets)
            for target in targets[shift:] + targets[:shift]:
                database_url = None
                if target == PEER:
                    database_url = server.create_database(f"peer_{round_number}")
                    result, failures = run_peer(
                        requests_file,
                        round_number=round_number,
                        duration=duration,
                        connections=connections,
                        database_url=database_url,
                    )
                    peer_failures[round_number] = failures
                    stored[PEER].append(_table_figures(database_url, "stripe", PEER_TABLES))
                else:
                    if target == "listener-postgresql":
                        database_url = server.create_database(f"ours_{round_number}")
                    result = run_target(
                        target,
                        requests_file,
                        round_number=round_number,
                        duration=duration,
                        connections=connections,
                        database_url=database_url,
                    )
                    if database_url:
                        stored[target].append(_table_figures(database_url, "public", OUR_TABLES))
                runs.append(result)
                print(result.line(), flush=True)
                if target == PEER:
                    for line in peer_failures[round_number]:
                        print(f"    peer {line}", flush=True)
    finally:
        server.stop()
        shutil.rmtree(requests_file.parent, ignore_errors=True)

    def median(target: str, field: str) -> float:
        return statistics.median(getattr(r, field) for r in runs if r.target == target)

    def same_round_ratio(target: str) -> float:
        by_round = {(r.target, r.round): r.events_per_s for r in runs}
        return statistics.median(
            by_round[(target, n)] / by_round[(PEER, n)] for n in range(1, rounds + 1)
        )

    summary: dict[str, dict[str, Any]] = {
        target: {
            "events_per_s": median(target, "events_per_s"),
            "p50_ms": median(target, "p50_ms"),
            "p99_ms": median(target, "p99_ms"),
            "non_2xx": sum(r.non_2xx for r in runs if r.target == target),
            "socket_errors": sum(r.socket_errors for r in runs if r.target == target),
        }
        for target in targets
    }
    for target in OURS:
        ratio = same_round_ratio(target)
        summary[target]["ratio_to_peer"] = ratio
        summary[target]["target_met"] = ratio >= TARGET_RATIO
    return {
        "peer": _peer_version(),
        "mean_event_bytes": round(mean_size),
        "connections": connections,
        "duration_s": duration,
        "rounds": rounds,
        "events_per_round": events,
        "target_ratio": TARGET_RATIO,
        "summary": summary,
        "peer_failures": peer_failures,
        "stored_after_run": stored,
        "runs": [asdict(r) for r in runs],
    }


def _peer_version() -> str:
    manifest = PEER_DIR / "node_modules" / PACKAGE / "package.json"
    version = json.loads(manifest.read_text())["version"]
    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    return f"{PACKAGE}@{version} on node {node}"


def print_table(result: dict[str, Any]) -> None:
    print(
        f"\n{result['peer']}; medians of {result['rounds']} rounds x {result['duration_s']} s, "
        f"{result['connections']} connections"
    )
    print(
        f"{'target':22} {'events/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8} {'x peer':>7}"
    )
    for target, figures in result["summary"].items():
        ratio = figures.get("ratio_to_peer")
        print(
            f"{target:22} {figures['events_per_s']:10.0f} {figures['p50_ms']:8.2f} "
            f"{figures['p99_ms']:8.2f} {figures['non_2xx']:8d} "
            f"{'' if ratio is None else f'{ratio:7.2f}'}"
        )
    for target in OURS:
        figures = result["summary"][target]
        print(
            f"  {target}: target >= {TARGET_RATIO:g}x the peer (same-round median): "
            f"{mark(figures['target_met'])}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.peer_bench", description=__doc__)
    add_load_arguments(parser)
    args = parser.parse_args()
    print(
        f"Against the peer: {args.rounds} alternating rounds of {args.duration}s, "
        f"{args.connections} connections",
        flush=True,
    )
    started = datetime.now(UTC)
    result = run(
        rounds=args.rounds,
        duration=args.duration,
        connections=args.connections,
        events=args.events,
    )
    print_table(result)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"peer-{started:%Y%m%dT%H%M%SZ}.json"
    path.write_text(
        json.dumps({"started": started.isoformat(), "args": vars(args), **result}, indent=2)
    )
    print(f"\nraw figures: {path}")


if __name__ == "__main__":
    main()
