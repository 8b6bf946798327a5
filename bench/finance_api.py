"""SPEC 16's two endpoints at scale: server-side p95 of /subscription-trends and /failed-payments.

`python -m bench.finance_api [--subscriptions N] [--failing N] [--closed N] [--paid N]
[--requests N] [--sqlite] [--postgres]`: fills a fresh store with N subscriptions over 20 plans
and a year of daily history ending at their counts, N failing invoices, N closed ones that were
failing (paid, voided, uncollectible, deleted, closed over the last 120 days) and N paid
invoices that never failed; starts the real listener process and asks one request at a time
over one keep-alive connection, the kinds interleaved: Trends over 30, 90 and 365 days; the
first page of failed payments, pages deep in the keyset through the cursors it gave out, limits
50 and 500, each Recovered window in turn. The answer's own `Server-Timing: app;dur=<ms>` is
the server's time.
"""

import argparse
import json
import secrets
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Engine, insert

from bench import read_path
from bench.finance_views import history_of_a_year
from bench.read_path_http import RATE_LIMIT, SERVER_TIMING, finance_cli, running, service_env
from finance_core.store import migrate
from finance_core.store.db import make_engine, write_transaction
from finance_core.store.models import invoices
from tests.support.postgres import PostgresServer, find_pg_bin, free_port

PAYMENTS_PATH = "/api/v1/platform/finance/failed-payments"
TRENDS_PATH = "/api/v1/platform/finance/subscription-trends"
TARGET_P95_MS = 20  # SPEC 16 benchmark, server side
CURRENCIES = [("usd", 2900)] * 6 + [("eur", 2500)] * 3 + [("jpy", 4500)]
CLOSINGS = ["paid", "paid", "paid", "void", "uncollectible", "deleted"]


def _invoice(n: int, kind: str, now: datetime) -> dict[str, Any]:
    currency, amount = CURRENCIES[n % len(CURRENCIES)]
    row: dict[str, Any] = {
        "id": f"in_{kind}_{n:08d}",
        "subscription_id": f"sub_scale_{n % 20_000:08d}",
        "customer_id": f"cus_scale_{n % 50_000:08d}",
        "product_id": f"prod_scale_{n % 20:02d}",  # bench.read_path's plans
        "status": "open",
        "payment_failing": False,
        "amount_due": amount,
        "amount_paid": 0,
        "currency": currency,
        "attempt_count": 1 + n % 4,
        "next_payment_attempt": None,
        "failing_since": None,
        "first_failed_at": None,
        "closed_at": None,
        "livemode": False,
        "state_created": 1_790_000_000,
        "state_event_id": "evt_bulk",
        "updated_at": now,
    }
    if kind == "failing":
        since = now - timedelta(minutes=n)
        row.update(payment_failing=True, failing_since=since, first_failed_at=since)
        if n % 3:
            row["next_payment_attempt"] = now + timedelta(hours=1 + n % 72)
    elif kind == "closed":
        closed = now - timedelta(minutes=n % (120 * 24 * 60))
        status = CLOSINGS[n % len(CLOSINGS)]
        row.update(
            status=status,
            first_failed_at=closed - timedelta(days=1 + n % 20),
            closed_at=closed,
            amount_paid=amount if status == "paid" else 0,
        )
    else:  # paid at once, never failing: most invoices of a store
        row.update(status="paid", amount_paid=amount, closed_at=now - timedelta(minutes=n))
    return row


def fill(
    engine: Engine, *, subscriptions_n: int, failing_n: int, closed_n: int, paid_n: int
) -> float:
    """The subscriptions, a year of their history and the invoices, in batches; seconds taken."""
    started = time.perf_counter()
    now = datetime.now(UTC)
    read_path.fill(engine, subscriptions_n=subscriptions_n, events_n=1_000, invoices_n=0)
    history_of_a_year(engine)
    for kind, count in (("failing", failing_n), ("closed", closed_n), ("paid", paid_n)):
        for start in range(0, count, read_path.BATCH):
            rows = [
                _invoice(n, kind, now) for n in range(start, min(start + read_path.BATCH, count))
            ]
            with write_transaction(engine) as conn:
                conn.execute(insert(invoices), rows)
    read_path.analyze(engine)
    return time.perf_counter() - started


def measure(database_url: str, workdir: Path, *, requests: int, warmup: int) -> dict[str, Any]:
    """p50/p95/max of the server's time per kind of request, over `requests` rounds."""
    env = service_env(
        database_url,
        stripe_webhook_secret=f"whsec_{secrets.token_hex(16)}",
        finance_api_rate_limit=RATE_LIMIT,
    )
    token = finance_cli(env, "token", "create", "bench-payments", "--role", "finance")
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "webhook_listener", "--port", str(port)]
    kinds = [
        *(f"trends {days}" for days in (30, 90, 365)),
        *("first page", "deep page", "limit 500", "recovered 90"),
    ]
    server: dict[str, list[float]] = {kind: [] for kind in kinds}
    with (
        running(
            command, env, ready_url=f"{base_url}/healthz", ready_body=None, log=workdir / "l.log"
        ),
        httpx.Client(
            base_url=base_url,
            headers={"Authorization": f"Bearer {token.splitlines()[-1]}"},
            timeout=30,
            trust_env=False,
        ) as http,
    ):

        def get(params: dict[str, Any], path: str = PAYMENTS_PATH) -> tuple[float, dict[str, Any]]:
            response = http.get(path, params=params)
            if response.status_code != 200:
                raise RuntimeError(f"{response.status_code} {response.text}")
            match = SERVER_TIMING.fullmatch(response.headers.get("server-timing", ""))
            if match is None:
                raise RuntimeError("answered without Server-Timing")
            return float(match[1]), response.json()["data"]

        # Cursors deep in the keyset: walk 500 at a time, keep every tenth page's cursor.
        deep, cursor = [], None
        for page in range(60):
            _, data = get({"limit": 500, **({"cursor": cursor} if cursor else {})})
            cursor = data["next_cursor"]
            if cursor is None:
                break
            if page % 10 == 9:
                deep.append(cursor)
        deep = deep or [None]
        for round_ in range(warmup + requests):
            window = (7, 30, 90)[round_ % 3]
            asks = {
                "first page": {"recovered_days": window},
                "deep page": {"recovered_days": window, "cursor": deep[round_ % len(deep)]},
                "limit 500": {"limit": 500, "recovered_days": window},
                "recovered 90": {"limit": 1, "recovered_days": 90},
            }
            for kind in kinds:
                if kind.startswith("trends"):
                    took, _ = get({"days": int(kind.split()[1])}, TRENDS_PATH)
                else:
                    took, _ = get({k: v for k, v in asks[kind].items() if v is not None})
                if round_ >= warmup:
                    server[kind].append(took)
    return {kind: read_path.percentiles(samples) for kind, samples in server.items()}


def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    backends = (["sqlite"] if args.sqlite else []) + (["postgresql"] if args.postgres else [])
    for backend in backends:
        workdir = Path(tempfile.mkdtemp(prefix="pmf-payments-"))
        server = None
        try:
            if backend == "postgresql":
                pg_bin = find_pg_bin()
                if pg_bin is None:
                    print("no PostgreSQL binaries: skipped", flush=True)
                    continue
                server = PostgresServer(pg_bin)
                server.start()
                url = server.create_database("payments")
            else:
                url = f"sqlite:///{workdir}/payments.db"
            engine = make_engine(url)
            migrate.upgrade(engine)
            load_s = fill(
                engine,
                subscriptions_n=args.subscriptions,
                failing_n=args.failing,
                closed_n=args.closed,
                paid_n=args.paid,
            )
            engine.dispose()
            print(
                f"{backend}: {args.subscriptions:,} subscriptions, a year of history and "
                f"{args.failing + args.closed + args.paid:,} invoices loaded in {load_s:.0f} s",
                flush=True,
            )
            figures = measure(url, workdir, requests=args.requests, warmup=args.warmup)
            results[backend] = {"load_s": load_s, "server_ms": figures}
            for kind, timing in figures.items():
                met = "met" if timing["p95_ms"] < TARGET_P95_MS else "NOT met"
                print(
                    f"  {kind:14} p50 {timing['p50_ms']:7.2f} ms  p95 {timing['p95_ms']:7.2f} "
                    f"ms  max {timing['max_ms']:7.2f} ms  (p95 < {TARGET_P95_MS} ms: {met})",
                    flush=True,
                )
        finally:
            if server:
                server.stop()
            shutil.rmtree(workdir, ignore_errors=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscriptions", type=int, default=1_000_000)
    parser.add_argument("--failing", type=int, default=100_000)
    parser.add_argument("--closed", type=int, default=100_000)
    parser.add_argument("--paid", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--sqlite", action="store_true")
    parser.add_argument("--postgres", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if not (args.sqlite or args.postgres):
        args.sqlite = args.postgres = True
    results = run(args)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
