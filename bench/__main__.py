"""`python -m bench`: ingest, scale-out, the read path, thin events, alerts and metrics, the
finance views at scale and re-dating the history; tables and JSON."""

import argparse
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from bench.ingest import add_load_arguments
from finance_core.store import migrate
from finance_core.store.db import make_engine
from finance_core.store.models import invoices, products, subscriptions, webhook_events
from tests.support.postgres import PostgresServer, find_pg_bin

RESULTS = Path(__file__).with_name("results")
INGEST_TARGET_RATIO = 0.85
INGEST_TARGET_P99_MS = 20
READ_TARGET_P95_MS = 10
READ_PATHS = ["subscription-summary", "stripe-sync-status", "healthz"]
DASHBOARD_TARGET_S = 2
DASHBOARD_TARGET_RSS_MB = 50


def mark(met: bool) -> str:
    return "met" if met else "NOT met"


def _load_header(ratio: str) -> str:
    return f"\n{'target':22} {'events/s':>10} {'p50 ms':>8} {'p99 ms':>8} {ratio:>10}"


def _load_line(target: str, figures: dict[str, Any], ratio: float | None) -> str:
    """One target's wrk figures (medians of the rounds), and its ratio when it has one."""
    return (
        f"{target:22} {figures['events_per_s']:10.0f} {figures['p50_ms']:8.2f} "
        f"{figures['p99_ms']:8.2f} {'' if ratio is None else f'{ratio:10.2f}'}"
    )


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
    # Each listener's ratio is to the minimal receiver on its own database.
    print(_load_header("x minimal"))
    for target, figures in result["summary"].items():  # type: ignore[union-attr]
        ratio = figures.get("ratio_to_minimal")
        print(_load_line(target, figures, ratio))
        if ratio is not None:
            print(
                f"  target >= {INGEST_TARGET_RATIO:.0%} of minimal on the same database: "
                f"{mark(ratio >= INGEST_TARGET_RATIO)}; p99 < {INGEST_TARGET_P99_MS} ms: "
                f"{mark(figures['p99_ms'] < INGEST_TARGET_P99_MS)}"
            )
    return result


def bench_scale_out(args: argparse.Namespace) -> dict[str, object]:
    from bench import scale_out

    print(
        f"\nScale-out: HAProxy in front of two listeners against one, on PostgreSQL; "
        f"{args.rounds} alternating rounds of {args.duration}s, {args.connections} connections",
        flush=True,
    )
    result = scale_out.run(
        rounds=args.rounds,
        duration=args.duration,
        connections=args.connections,
        events=args.events,
        subscriptions=args.scale_subscriptions,
        plans=args.scale_plans,
    )
    summary: dict[str, Any] = result["summary"]  # type: ignore[assignment]
    print(_load_header("x one"))
    for target, figures in summary.items():
        print(_load_line(target, figures, figures.get("ratio_to_one")))
    ratio = summary["two listeners"]["ratio_to_one"]
    crash = summary["one killed mid-run"]
    print(
        f"  two listeners / one (median of the rounds' ratios): {ratio:.2f}; target >= "
        f"{scale_out.TARGET_RATIO:.2f}: {mark(ratio >= scale_out.TARGET_RATIO)}"
    )
    print(
        f"  deadlocks: {summary['one listener']['deadlocks']} with one listener, "
        f"{summary['two listeners']['deadlocks']} with two (target 0)"
    )
    print(
        f"  one killed mid-run: p99 {crash['p99_ms']:.2f} ms, max {crash['max_ms']:.0f} ms, "
        f"{crash['non_2xx']} non-2xx and {crash['socket_errors']} socket errors in all rounds"
    )
    return result


def _read_path_stores(
    backend: str, workdir: Path, args: argparse.Namespace
) -> tuple[str, str, PostgresServer | None]:
    """The store to fill, an empty one beside it, and the PostgreSQL server holding them."""
    if backend == "sqlite":
        filled = Path(args.sqlite_store) if args.sqlite_store else workdir / "scale.db"
        return f"sqlite:///{filled.resolve()}", f"sqlite:///{workdir}/empty.db", None
    server = PostgresServer(find_pg_bin())  # type: ignore[arg-type]
    server.start()
    return server.create_database("scale"), server.create_database("empty"), server


def _fill(url: str, args: argparse.Namespace) -> float | None:
    """Seconds to fill the store, or None for a --sqlite-store that was filled before."""
    from bench import read_path

    engine = make_engine(url)
    try:
        migrate.upgrade(engine)
        with engine.connect() as conn:
            filled_before = conn.execute(select(func.count()).select_from(products)).scalar_one()
        if filled_before:
            print(f"  reusing the filled store {url}", flush=True)
            return None
        print(
            f"  loading {args.subscriptions:,} subscriptions, {args.scale_events:,} events and "
            f"{args.scale_invoices:,} invoices...",
            flush=True,
        )
        return read_path.fill(
            engine,
            subscriptions_n=args.subscriptions,
            events_n=args.scale_events,
            invoices_n=args.scale_invoices,
        )
    finally:
        engine.dispose()


def _store_sizes(url: str) -> dict[str, int]:
    """How many rows the tables the read path touches hold."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return {
                table.name: conn.execute(select(func.count()).select_from(table)).scalar_one()
                for table in (subscriptions, webhook_events, invoices)
            }
    finally:
        engine.dispose()


def _in_process(url: str) -> dict[str, dict[str, float]]:
    from bench import read_path

    engine = make_engine(url)
    try:
        return read_path.measure(engine)
    finally:
        engine.dispose()


def _read_path_targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of the read path against what this backend measured."""
    targets: list[dict[str, Any]] = []
    http = result.get("http")
    if http:
        for path in READ_PATHS[:2]:
            server = http["server"][path]
            targets.append(
                {
                    "target": f"{path} p95 < {READ_TARGET_P95_MS} ms (server)",
                    "measured": f"{server['p95_ms']:.2f} ms",
                    "met": server["p95_ms"] < READ_TARGET_P95_MS,
                }
            )
            targets.append(
                {
                    "target": f"{path} p95 <= 2x /healthz p95 (server)",
                    "measured": f"{server['x_healthz_p95']:.2f}x",
                    "met": server["x_healthz_p95"] <= 2,
                }
            )
    dashboard = result.get("dashboard")
    if dashboard:
        first_visit = dashboard["filled"]["first_visit"]
        for statistic in ("median", "max"):
            # "Login to chart": from pressing Login. Loading the sign-in page comes before it
            # and is reported beside it (load, and navigate to chart).
            value = first_visit[f"sign_in_to_chart_{statistic}_ms"]
            targets.append(
                {
                    "target": f"dashboard login to chart, {statistic} < {DASHBOARD_TARGET_S} s",
                    "measured": f"{value / 1000:.2f} s",
                    "met": value < DASHBOARD_TARGET_S * 1000,
                }
            )
        difference = dashboard["rss_difference_mb"]
        targets.append(
            {
                "target": f"dashboard RSS filled - empty <= {DASHBOARD_TARGET_RSS_MB} MB",
                "measured": f"{difference:+.1f} MB",
                "met": difference <= DASHBOARD_TARGET_RSS_MB,
            }
        )
    return targets


def _median_max(figures: dict[str, Any], name: str) -> str:
    """A column of seconds: median/max."""
    median, most = figures[f"{name}_median_ms"] / 1000, figures[f"{name}_max_ms"] / 1000
    return f" {median:6.2f}/{most:<6.2f}"


def _print_read_path(result: dict[str, Any]) -> None:
    queries = result["in_process"]
    http = result.get("http")
    print(
        f"\n  {'':22} {'in-process':>15}   {'server (Server-Timing)':>24}   "
        f"{'client (loopback)':>24}"
    )
    print(f"  {'path':22} {'p50':>7} {'p95':>7}   {'p50':>7} {'p95':>7} {'x hz':>8}   ", end="")
    print(f"{'p50':>7} {'p95':>7} {'x hz':>8}   (ms; x hz = p95 / healthz p95)")
    for path in READ_PATHS:
        line = f"  {path:22} {queries[path]['p50_ms']:7.2f} {queries[path]['p95_ms']:7.2f}"
        if http:
            for side in ("server", "client"):
                timing = http[side][path]
                line += (
                    f"   {timing['p50_ms']:7.2f} {timing['p95_ms']:7.2f} "
                    f"{timing['x_healthz_p95']:8.2f}"
                )
        print(line)
    dashboard = result.get("dashboard")
    if dashboard:
        print(
            f"\n  dashboard: {dashboard['runs']} sign-ins per store, {dashboard['pause_s']:.0f} s "
            "apart, the first in a cold process (seconds: median / max)"
        )
        if dashboard["streamlit_options"]:
            print(f"  streamlit run options: {' '.join(dashboard['streamlit_options'])}")
        print(
            f"  {'store':7} {'visit':10} {'nav->chart':>13} {'load':>13} {'login->chart':>13} "
            f"{'->delivered':>13} {'settled':>13} {'RSS MB':>7} {'peak MB':>7}"
        )
        for store in ("empty", "filled"):
            memory = f"{dashboard[store]['rss_mb']:7.1f} {dashboard[store]['peak_rss_mb']:7.1f}"
            for visit in ("first_visit", "returning_visitor"):
                figures = dashboard[store][visit]
                columns = "".join(
                    _median_max(figures, name)
                    for name in (
                        "navigate_to_chart",
                        "load",
                        "sign_in_to_chart",
                        "sign_in_to_delivered",
                        "sign_in_settled",
                    )
                )
                print(f"  {store:7} {visit.split('_')[0]:10}{columns} {memory}")
                memory = ""
    print()
    for target in result["targets"]:
        print(f"  {target['target']:52} {target['measured']:>10}  {mark(target['met'])}")


@dataclass
class FilledStore:
    """A store filled to the read path's size, an empty one beside it, and their server."""

    workdir: Path
    url: str
    empty_url: str
    server: PostgresServer | None
    result: dict[str, Any]


def _backends(args: argparse.Namespace) -> list[str]:
    backends = [] if args.no_sqlite else ["sqlite"]
    return backends + ([] if args.no_postgres or not find_pg_bin() else ["postgresql"])


@contextmanager
def _filled_store(backend: str, args: argparse.Namespace, prefix: str) -> Iterator[FilledStore]:
    """Fill (or reuse) the store on `backend`; its server stopped and workdir gone after."""
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    url, empty_url, server = _read_path_stores(backend, workdir, args)
    result: dict[str, Any] = {"cpus": os.cpu_count(), "load_average_before": os.getloadavg()}
    try:
        result["load_seconds"] = _fill(url, args)
        if result["load_seconds"] is not None:
            print(f"  loaded in {result['load_seconds']:.0f} s", flush=True)
        result["store_rows"] = _store_sizes(url)
        print("  store: " + ", ".join(f"{n:,} {name}" for name, n in result["store_rows"].items()))
        yield FilledStore(workdir, url, empty_url, server, result)
    finally:
        if server:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)  # the filled store is gigabytes
    result["load_average_after"] = os.getloadavg()


def bench_read_path(args: argparse.Namespace) -> dict[str, object]:
    from bench import dashboard_scale, read_path_http

    results: dict[str, object] = {}
    for backend in _backends(args):
        print(f"\nRead path on {backend}:", flush=True)
        with _filled_store(backend, args, "pmf-read-") as store:
            url, result = store.url, store.result
            result["in_process"] = _in_process(url)
            if not args.no_http:
                print(f"  HTTP: {args.http_requests} requests per path, interleaved", flush=True)
                result["http"] = read_path_http.measure(
                    url, workdir=store.workdir, requests=args.http_requests
                )
            if not args.no_dashboard:
                print(
                    f"  dashboard: {args.dashboard_runs} sign-ins on an empty and on the filled "
                    "store",
                    flush=True,
                )
                engine = make_engine(store.empty_url)
                migrate.upgrade(engine)
                engine.dispose()
                result["dashboard"] = dashboard_scale.measure(
                    empty_url=store.empty_url,
                    filled_url=url,
                    workdir=store.workdir,
                    runs=args.dashboard_runs,
                    pause=args.dashboard_pause,
                    options=args.dashboard_option,
                )
        result["targets"] = _read_path_targets(result)
        _print_read_path(result)
        results[backend] = result
    return results


def bench_thin_events(args: argparse.Namespace) -> dict[str, object]:
    from bench import thin_events

    print(
        f"\nThin events: {args.thin_events:,} about {args.thin_objects:,} subscriptions, the "
        f"stand-in capped at {args.api_rps} requests/s, beside {args.thin_duration} s of "
        f"snapshot ingest at {args.connections} connections; {args.rounds} rounds",
        flush=True,
    )
    result = thin_events.run(
        rounds=args.rounds,
        duration=args.thin_duration,
        connections=args.connections,
        thin_events=args.thin_events,
        objects=args.thin_objects,
        api_rps=args.api_rps,
        postgres=not args.no_postgres,
    )
    print()
    for target, measured, met in thin_events.targets(result):
        print(f"  {target:60} {measured:>10}  {mark(met)}")
    return result


def bench_alerts(args: argparse.Namespace) -> dict[str, object]:
    """Issue 13's targets on each backend: /metrics, the alert evaluation, ingest on vs off."""
    from bench import alerts

    results: dict[str, object] = {}
    for backend in _backends(args):
        print(f"\nAlerts and metrics on {backend}:", flush=True)
        with _filled_store(backend, args, "pmf-alerts-") as store:
            result = store.result
            result["evaluation"] = alerts.measure_evaluation(store.url)
            result["scrapes"] = alerts.measure_scrapes(store.url, workdir=store.workdir)
            if not args.no_ingest:
                print(
                    f"  ingest: {args.rounds} alternating rounds of {args.duration}s, "
                    f"{args.connections} connections",
                    flush=True,
                )
                result["ingest"] = alerts.measure_ingest(
                    backend,
                    workdir=store.workdir,
                    server=store.server,
                    rounds=args.rounds,
                    duration=args.duration,
                    connections=args.connections,
                    events=args.events,
                )
        result["targets"] = alerts.targets(result)
        _print_alerts(result)
        results[backend] = result
    return results


def _print_alerts(result: dict[str, Any]) -> None:
    scrapes, evaluation = result["scrapes"], result["evaluation"]
    print(
        f"\n  /metrics, {scrapes['scrapes']} scrapes {scrapes['interval_s'] * 1000:.0f} ms apart "
        f"(gauges read from the store about {scrapes['store_reads_about']} times):"
    )
    for side in ("server", "client"):
        timing = scrapes[side]
        print(
            f"    {side:7} p50 {timing['p50_ms']:6.2f}  p95 {timing['p95_ms']:6.2f}  "
            f"max {timing['max_ms']:6.2f} ms"
        )
    gauges = evaluation["gauge_read_in_process"]
    print(
        f"    store read behind the gauges, in-process: p50 {gauges['p50_ms']:.2f} ms, "
        f"p95 {gauges['p95_ms']:.2f} ms"
    )
    backend_cpu = evaluation["postgres_backend_cpu_ms_mean"]
    print(
        f"  alert evaluation ({evaluation['kept_rejections']:,} kept rejections): CPU "
        f"{evaluation['cpu_ms_mean']:.2f} ms each (this process "
        f"{evaluation['client_cpu_ms_mean']:.2f}"
        + ("" if backend_cpu is None else f", PostgreSQL backend {backend_cpu:.2f}")
        + f"), wall p50 {evaluation['wall_ms']['p50_ms']:.2f} ms: "
        f"{evaluation['percent_of_a_core_at_60s']:.4f}% of a core every 60 s"
    )
    ingest = result.get("ingest")
    if ingest:
        ratios = ", ".join(f"{ratio:.2f}" for ratio in ingest["ratios"])
        cpu_ratios = ", ".join(f"{ratio:.2f}" for ratio in ingest["cpu_ratios"])
        print(
            f"  ingest: off {ingest['off_events_per_s']:.0f}/s, "
            f"on {ingest['on_events_per_s']:.0f}/s, on/off per round {ratios}\n"
            f"  CPU per event: off {ingest['cpu_us_per_event_off']:.0f} µs, "
            f"on {ingest['cpu_us_per_event_on']:.0f} µs; events per CPU second, on/off per "
            f"round {cpu_ratios}"
        )
    print()
    for target in result["targets"]:
        print(f"  {target['target']:52} {target['measured']:>10}  {mark(target['met'])}")


def bench_finance_views(args: argparse.Namespace) -> dict[str, object]:
    from bench import finance_views

    result = finance_views.run(
        postgres=not args.no_postgres,
        sqlite=not args.no_sqlite,
        events_n=args.retention_events,
        subscriptions_n=args.subscriptions,
        failing_n=args.failing_invoices,
        seconds=args.duration,
        dashboard_runs=0 if args.no_dashboard else args.dashboard_runs,
    )
    for backend, figures in result.items():
        retention = figures["retention"]
        print(
            f"\n  {backend}: {retention['bytes_per_million_events'] / 2**20:.0f} MiB per million "
            f"events; pruned {retention['events']:,} in {retention['prune_s']:.0f} s "
            f"({retention['pruned_per_s']:,.0f}/s)"
        )
        for name, timing in figures["trends"]["queries"].items():
            print(f"  {name:40} p50 {timing['p50_ms']:6.1f} ms  p95 {timing['p95_ms']:6.1f} ms")
        for target in figures["targets"]:
            print(f"  {target['target']:52} {target['measured']:>10}  {mark(target['met'])}")
    return result


def bench_finance_api(args: argparse.Namespace) -> dict[str, object]:
    from bench import finance_api

    print(f"\nSPEC 16's endpoints over HTTP: {args.subscriptions:,} subscriptions", flush=True)
    return finance_api.run(
        argparse.Namespace(
            subscriptions=args.subscriptions,
            failing=args.failing_invoices,
            closed=args.failing_invoices,
            paid=args.subscriptions,
            requests=200,
            warmup=20,
            sqlite=not args.no_sqlite,
            postgres=not args.no_postgres,
        )
    )


def bench_history_rebuild(args: argparse.Namespace) -> dict[str, object]:
    from bench import history_rebuild

    print(f"History re-dated by Stripe's dates: {args.subscriptions:,} subscriptions", flush=True)
    result = history_rebuild.run(
        subscriptions_n=args.subscriptions, sqlite=not args.no_sqlite, postgres=not args.no_postgres
    )
    for backend, figures in result.items():
        print(
            f"  {backend}: {figures['upgrade_s']:.2f} s, memory +{figures['rss_growth_mb']:.0f} MB "
            f"(< {history_rebuild.TARGET_S} s, < {history_rebuild.TARGET_GROWTH_MB} MB): "
            f"{mark(figures['targets_met'])}"
        )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--only",
        choices=[
            "ingest",
            "scale-out",
            "read-path",
            "thin-events",
            "alerts",
            "finance-views",
            "finance-api",
            "history-rebuild",
        ],
    )
    add_load_arguments(parser)
    parser.add_argument("--subscriptions", type=int, default=1_000_000)
    parser.add_argument("--scale-events", type=int, default=10_000_000)
    parser.add_argument(
        "--scale-subscriptions",
        type=int,
        default=5000,
        help="scale-out: subscriptions the events move (2000 with 6 plans: the harder mix)",
    )
    parser.add_argument("--scale-plans", type=int, default=20, help="scale-out: plans they use")
    parser.add_argument("--scale-invoices", type=int, default=20_000)
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--no-sqlite", action="store_true", help="read path: PostgreSQL only")
    parser.add_argument(
        "--sqlite-store",
        metavar="PATH",
        help="read path: fill this SQLite file, or reuse it if it was filled before",
    )
    parser.add_argument("--http-requests", type=int, default=400, help="per path, read path")
    parser.add_argument("--no-http", action="store_true", help="read path: skip the listener")
    parser.add_argument("--dashboard-runs", type=int, default=5)
    parser.add_argument(
        "--dashboard-pause",
        type=float,
        default=31,
        help="seconds between sign-ins (past the dashboard's 30 s cache: each reads the store)",
    )
    parser.add_argument(
        "--dashboard-option",
        action="append",
        default=[],
        metavar="SECTION.NAME=VALUE",
        help="an extra `streamlit run` setting for the dashboard (experiments)",
    )
    parser.add_argument("--no-dashboard", action="store_true", help="read path: skip Chromium")
    parser.add_argument("--thin-events", type=int, default=20_000)
    parser.add_argument("--thin-objects", type=int, default=2_000)
    parser.add_argument("--api-rps", type=int, default=100, help="thin events: the stand-in's cap")
    parser.add_argument(
        "--thin-duration",
        type=int,
        default=40,
        help="thin events: seconds of snapshot load (the burst must be delivered within it)",
    )
    parser.add_argument("--no-ingest", action="store_true", help="alerts: skip the ingest rounds")
    parser.add_argument(
        "--retention-events", type=int, default=1_000_000, help="finance views: events to prune"
    )
    parser.add_argument(
        "--failing-invoices", type=int, default=100_000, help="finance views: Payments page"
    )
    args = parser.parse_args()

    report: dict[str, object] = {"started": datetime.now(UTC).isoformat(), "args": vars(args)}
    if args.only in (None, "ingest"):
        report["ingest"] = bench_ingest(args)
    if args.only == "scale-out" or (args.only is None and not args.no_postgres):
        report["scale_out"] = bench_scale_out(args)
    if args.only in (None, "read-path"):
        report["read_path"] = bench_read_path(args)
    if args.only in (None, "thin-events"):
        report["thin_events"] = bench_thin_events(args)
    if args.only in (None, "alerts"):
        report["alerts"] = bench_alerts(args)
    if args.only in (None, "finance-views"):
        report["finance_views"] = bench_finance_views(args)
    if args.only in (None, "finance-api"):
        report["finance_api"] = bench_finance_api(args)
    if args.only in (None, "history-rebuild"):
        report["history_rebuild"] = bench_history_rebuild(args)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"bench-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(report, indent=2, default=str))
    print(f"\nraw figures: {path}")


if __name__ == "__main__":
    main()
