"""Retention and the finance views at scale (issue 15), on SQLite and PostgreSQL.

- store size: the bytes a million events take (table and indexes), from an empty store;
- pruning a million events past the retention with `python -m finance_core prune` (the
  housekeeping job's own function and batches) while wrk loads the real listener at full rate,
  against the same listener's rate before and after (same run, same store);
- the Trends queries on a million subscriptions with 365 days of history;
- the Payments page with 100,000 failing invoices: from pressing Login on /payments to the
  table drawn, in headless Chromium.
"""

import os
import random
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from playwright.sync_api import sync_playwright
from sqlalchemy import Engine, delete, insert, select, text

from bench import dashboard_scale, ingest, read_path
from bench.events import generate, write_requests
from bench.read_path_http import ROOT, finance_cli, running, service_env
from finance_core.demo_history import spread
from finance_core.store import migrate
from finance_core.store.db import make_engine, read_transaction, write_transaction
from finance_core.store.models import invoices, subscription_counts, subscription_history
from finance_core.views.trends import active_per_plan_per_day, last_days, new_and_canceled_per_week
from tests.support.postgres import PostgresServer, find_pg_bin, free_port

PRUNE_TARGET_RATIO = 0.9
TRENDS_TARGET_P95_MS = 50
PAYMENTS_TARGET_S = 2
ACTIVE = ["active", "trialing", "past_due"]


def _size_bytes(engine: Engine) -> int:
    """The store's size: SQLite's file after a checkpoint, or PostgreSQL's database."""
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("VACUUM"))
            return int(conn.execute(text("SELECT pg_database_size(current_database())")).scalar())
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    return Path(str(engine.url.database)).stat().st_size


def _ingest_round(url: str, seed: int, seconds: int, workdir: Path) -> ingest.Run:
    """One wrk run of `seconds` against the listener, with events no round has sent."""
    requests_file = workdir / "requests.txt"
    write_requests(generate(40_000, seed=seed), ingest.SECRET, requests_file)
    out = ingest.wrk(url, requests_file, duration=seconds, connections=16)
    return ingest.parse_run(out, "listener", seed)


def prune_under_ingest(
    database_url: str, workdir: Path, *, events_n: int, seconds: int
) -> dict[str, Any]:
    """Store size per million events, then pruning them with ingest at full rate."""
    engine = make_engine(database_url)
    migrate.upgrade(engine)
    empty = _size_bytes(engine)
    first = datetime.now(UTC) - timedelta(days=200)
    started = time.perf_counter()
    read_path.load_events(engine, events_n=events_n, first=first, span=timedelta(days=100))
    read_path.analyze(engine)
    load_s = time.perf_counter() - started
    per_million = (_size_bytes(engine) - empty) * 1_000_000 / events_n
    engine.dispose()
    print(
        f"  {events_n:,} events loaded in {load_s:.0f} s: {per_million / 2**20:.0f} MiB per million"
    )

    # The listener's own housekeeping would prune at start: give it nothing old to find, and
    # prune from the command line instead, which runs the same function with the same batches.
    os.environ["EVENT_RETENTION_DAYS"] = "3650"
    baseline: list[ingest.Run] = []
    during: list[ingest.Run] = []
    with ingest.serving("listener", database_url) as (url, _):
        for seed in (1, 2):
            baseline.append(_ingest_round(url, seed, seconds, workdir))
            print(baseline[-1].line(), "(no pruning)", flush=True)
        env = service_env(database_url, event_retention_days="90")
        prune_started = time.perf_counter()
        with (workdir / "prune.log").open("w") as log:
            prune = subprocess.Popen(
                [sys.executable, "-m", "finance_core", "prune"], cwd=ROOT, env=env, stdout=log
            )
            seed = 10
            while prune.poll() is None:
                run = _ingest_round(url, seed, seconds, workdir)
                seed += 1
                if prune.poll() is None:  # pruned all the while
                    during.append(run)
                    print(run.line(), "(pruning)", flush=True)
            prune_s = time.perf_counter() - prune_started
        for seed in (3, 4):
            baseline.append(_ingest_round(url, seed, seconds, workdir))
            print(baseline[-1].line(), "(no pruning)", flush=True)
    os.environ.pop("EVENT_RETENTION_DAYS")
    # None: the prune ended before a whole round could run beside it (a small store).
    ratio = (
        statistics.median(r.events_per_s for r in during)
        / statistics.median(r.events_per_s for r in baseline)
        if during
        else None
    )
    return {
        "events": events_n,
        "load_s": load_s,
        "bytes_per_million_events": per_million,
        "prune_s": prune_s,
        "pruned_per_s": events_n / prune_s,
        "prune_output": (workdir / "prune.log").read_text().strip(),
        "baseline": [vars(r) for r in baseline],
        "during": [vars(r) for r in during],
        "ratio": ratio,
    }


def history_of_a_year(engine: Engine) -> int:
    """Replace the history the bulk load left on today with 365 days that end at the counts."""
    with write_transaction(engine) as conn:
        counts = {
            (row.product_id, row.status): row.subscription_count
            for row in conn.execute(select(subscription_counts))
            if row.subscription_count
        }
        rows = spread(counts, days=365, today=datetime.now(UTC).date(), rng=random.Random(5))
        conn.execute(delete(subscription_history))
        for start in range(0, len(rows), read_path.BATCH):
            conn.execute(insert(subscription_history), rows[start : start + read_path.BATCH])
    return len(rows)


def trends_at_scale(database_url: str, *, subscriptions_n: int, repeat: int) -> dict[str, Any]:
    """Each Trends query's time, interleaved, on a year of history."""
    engine = make_engine(database_url)
    migrate.upgrade(engine)
    load_s = read_path.fill(engine, subscriptions_n=subscriptions_n, events_n=0, invoices_n=0)
    history_rows = history_of_a_year(engine)
    read_path.analyze(engine)
    print(f"  {subscriptions_n:,} subscriptions in {load_s:.0f} s, {history_rows:,} history rows")

    def per_day(days: int) -> Any:
        def read() -> None:
            start, end = last_days(days=days, now=datetime.now(UTC))
            with read_transaction(engine) as conn:
                active_per_plan_per_day(conn=conn, active_statuses=ACTIVE, start=start, end=end)

        return read

    def per_week(days: int) -> Any:
        def read() -> None:
            start, end = last_days(days=days, now=datetime.now(UTC))
            with read_transaction(engine) as conn:
                new_and_canceled_per_week(conn=conn, start=start, end=end)

        return read

    reads = {
        "active per plan per day, 365 days": per_day(365),
        "active per plan per day, 90 days": per_day(90),
        "new and canceled per week, 365 days": per_week(365),
    }
    samples: dict[str, list[float]] = {name: [] for name in reads}
    for _ in range(repeat):  # interleaved, so that machine noise hits them alike
        for name, read in reads.items():
            started = time.perf_counter()
            read()
            samples[name].append((time.perf_counter() - started) * 1000)
    engine.dispose()
    return {
        "subscriptions": subscriptions_n,
        "history_rows": history_rows,
        "queries": {name: read_path.percentiles(values) for name, values in samples.items()},
    }


def _failing_invoices(engine: Engine, failing_n: int) -> None:
    """Failing invoices in three currencies over 20,000 subscriptions of 20 plans."""
    read_path.fill(engine, subscriptions_n=20_000, events_n=1_000, invoices_n=0)
    now = datetime.now(UTC)
    currencies = [("usd", 2900)] * 6 + [("eur", 2500)] * 3 + [("jpy", 4500)]
    for start in range(0, failing_n, read_path.BATCH):
        rows = []
        for n in range(start, min(start + read_path.BATCH, failing_n)):
            currency, amount = currencies[n % len(currencies)]
            rows.append(
                {
                    "id": f"in_fail_{n:07d}",
                    "subscription_id": f"sub_scale_{n % 20_000:08d}",
                    "status": "open",
                    "payment_failing": True,
                    "amount_due": amount,
                    "currency": currency,
                    "attempt_count": 1 + n % 4,
                    "failing_since": now - timedelta(minutes=n),
                    "livemode": False,
                    "state_created": 1_790_000_000,
                    "state_event_id": "evt_bulk",
                    "updated_at": now,
                }
            )
        with write_transaction(engine) as conn:
            conn.execute(insert(invoices), rows)
    read_path.analyze(engine)


def payments_page(
    database_url: str, workdir: Path, *, failing_n: int, runs: int, pause: float
) -> dict[str, Any]:
    """Sign-in to the Payments table: from pressing Login on /payments until it is drawn."""
    engine = make_engine(database_url)
    migrate.upgrade(engine)
    _failing_invoices(engine, failing_n)
    engine.dispose()
    username, password = f"bench-{secrets.token_hex(3)}", secrets.token_urlsafe(12)
    env = service_env(database_url, dashboard_cookie_key=secrets.token_urlsafe(32))
    finance_cli(env, "user", "add", username, "--role", "finance", stdin=password + "\n")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true"]
    command += ["--server.port", str(port), "--server.address", "127.0.0.1"]
    timings: list[dict[str, float]] = []
    with (
        running(
            command, env, ready_url=f"{url}/_stcore/health", ready_body="ok", log=workdir / "st.log"
        ),
        sync_playwright() as playwright,
    ):
        browser = playwright.chromium.launch(
            executable_path=str(dashboard_scale.CHROMIUM), args=dashboard_scale.CHROMIUM_ARGS
        )
        try:
            # A process's very first page run knows only the pages/ folder, not the app's
            # navigation: a first visit at /payments would meet "page not found". Open the
            # root once, as the first viewer after a restart does.
            context = browser.new_context()
            first = context.new_page()
            first.goto(url)
            first.get_by_role("textbox", name="Username").wait_for(
                timeout=dashboard_scale.TIMEOUT_MS
            )
            dashboard_scale._idle_since(first)
            context.close()
            for run in range(runs):
                if run:
                    time.sleep(pause)
                context = browser.new_context(viewport={"width": 1400, "height": 1000})
                context.set_default_timeout(dashboard_scale.TIMEOUT_MS)
                try:
                    page = context.new_page()
                    timings.append(
                        _sign_in_to_payments(page, f"{url}/payments", username, password)
                    )
                finally:
                    context.close()
        finally:
            browser.close()
    figures: dict[str, Any] = {"failing_invoices": failing_n, "runs": timings}
    for name in ("load_ms", "sign_in_to_table_ms"):
        values = [t[name] for t in timings]
        figures[name.replace("_ms", "_median_ms")] = statistics.median(values)
        figures[name.replace("_ms", "_max_ms")] = max(values)
    return figures


def _sign_in_to_payments(page: Any, url: str, username: str, password: str) -> dict[str, float]:
    started = time.perf_counter()
    page.goto(url)
    page.get_by_role("textbox", name="Username").wait_for()
    ready = max(dashboard_scale._idle_since(page), time.perf_counter())
    page.get_by_role("textbox", name="Username").fill(username)
    page.get_by_role("textbox", name="Password").fill(password)
    submitted = time.perf_counter()
    page.get_by_role("button", name="Login").click()
    # .first: while the Overview's fragment redraws, the old link may linger a moment.
    page.get_by_role("heading", name="Payments").wait_for()
    page.get_by_text("newest failure first").wait_for()
    page.locator("[data-testid=stDataFrame] canvas").last.wait_for()
    drawn = time.perf_counter()
    return {"load_ms": (ready - started) * 1000, "sign_in_to_table_ms": (drawn - submitted) * 1000}


def _stores(backend: str, server: PostgresServer | None, workdir: Path, name: str) -> str:
    if backend == "sqlite":
        return f"sqlite:///{workdir}/{name}.db"
    assert server is not None
    return server.create_database(name)


def run(
    *,
    postgres: bool,
    sqlite: bool,
    events_n: int = 1_000_000,
    subscriptions_n: int = 1_000_000,
    failing_n: int = 100_000,
    seconds: int = 5,
    repeat: int = 100,
    dashboard_runs: int = 5,
) -> dict[str, Any]:
    """Every part on each backend; a temporary directory and server for each."""
    results: dict[str, Any] = {}
    backends = (["sqlite"] if sqlite else []) + (
        ["postgresql"] if postgres and find_pg_bin() else []
    )
    for backend in backends:
        workdir = Path(tempfile.mkdtemp(prefix="pmf-views-"))
        server = None
        if backend == "postgresql":
            server = PostgresServer(find_pg_bin())  # type: ignore[arg-type]
            server.start()
        result: dict[str, Any] = {"load_average_before": os.getloadavg()}
        try:
            print(f"\nRetention on {backend}:", flush=True)
            result["retention"] = prune_under_ingest(
                _stores(backend, server, workdir, "retention"),
                workdir,
                events_n=events_n,
                seconds=seconds,
            )
            print(f"Trends on {backend}:", flush=True)
            result["trends"] = trends_at_scale(
                _stores(backend, server, workdir, "trends"),
                subscriptions_n=subscriptions_n,
                repeat=repeat,
            )
            if dashboard_runs:
                print(f"Payments page on {backend}:", flush=True)
                result["payments"] = payments_page(
                    _stores(backend, server, workdir, "payments"),
                    workdir,
                    failing_n=failing_n,
                    runs=dashboard_runs,
                    pause=11,  # past the Payments page's 10 s cache: each run reads the store
                )
        finally:
            if server:
                server.stop()
            shutil.rmtree(workdir, ignore_errors=True)
        result["load_average_after"] = os.getloadavg()
        result["targets"] = targets(result)
        results[backend] = result
    return results


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of issue 15 against what one backend measured."""
    ratio = result["retention"]["ratio"]
    found = [
        {
            "target": f"ingest while pruning >= {PRUNE_TARGET_RATIO}x without",
            "measured": "no round" if ratio is None else f"{ratio:.2f}x",
            "met": ratio is not None and ratio >= PRUNE_TARGET_RATIO,
        }
    ]
    for name, figures in result["trends"]["queries"].items():
        found.append(
            {
                "target": f"{name} p95 < {TRENDS_TARGET_P95_MS} ms",
                "measured": f"{figures['p95_ms']:.1f} ms",
                "met": figures["p95_ms"] < TRENDS_TARGET_P95_MS,
            }
        )
    payments = result.get("payments")
    if payments:
        for statistic in ("median", "max"):
            value = payments[f"sign_in_to_table_{statistic}_ms"] / 1000
            found.append(
                {
                    "target": f"Payments sign-in to table, {statistic} < {PAYMENTS_TARGET_S} s",
                    "measured": f"{value:.2f} s",
                    "met": value < PAYMENTS_TARGET_S,
                }
            )
    return found
