"""`make run`: starts listener and dashboard, fills the demo store, stops on Ctrl-C."""

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy import func, select

from finance_core.store.db import make_engine, read_transaction
from finance_core.store.models import webhook_events
from finance_core.views.payments import failing_totals
from finance_core.views.queries import stripe_sync_status, subscription_summary
from finance_core.views.trends import active_per_plan_per_day, last_days, new_and_canceled_per_week
from tests.support.postgres import free_port
from tests.support.servers import child_processes, listening_addresses, wait_gone, writer_of
from tests.support.waiting import wait_until


def wait_for(url: str, seconds: float = 90) -> None:
    wait_until(
        lambda: httpx.get(url, timeout=1).status_code == 200,
        timeout=seconds,
        every=0.3,
        what=f"{url} answering",
        ignoring=(httpx.TransportError,),
    )


def port_closed(port: int) -> bool:
    try:
        httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
    except httpx.TransportError:
        return True
    return False


@pytest.mark.slow
def test_make_run_in_demo_mode_fills_the_store_and_stops_on_ctrl_c(tmp_path):
    listener, dashboard = free_port(), free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in (
            "STRIPE_WEBHOOK_SECRET",
            "DATABASE_URL",
            "DASHBOARD_COOKIE_KEY",
            "LISTENER_HOST",
            "DASHBOARD_ADDRESS",
        )
    }
    env.update(
        LISTENER_PORT=str(listener),
        DASHBOARD_PORT=str(dashboard),
        FINANCE_DATA_DIR=str(tmp_path / "data"),
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "finance_core.run"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for(f"http://127.0.0.1:{listener}/healthz")
        wait_for(f"http://127.0.0.1:{dashboard}/_stcore/health")
        # Neither LISTENER_HOST nor DASHBOARD_ADDRESS set: loopback only, not every interface.
        assert listening_addresses(listener) == {"127.0.0.1"}
        assert listening_addresses(dashboard) == {"127.0.0.1"}
        engine = make_engine(f"sqlite:///{tmp_path}/data/demo.db")
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            with read_transaction(engine) as conn:
                if (
                    conn.execute(select(func.count()).select_from(webhook_events)).scalar_one()
                    > 500
                ):
                    break
            time.sleep(1)
        active = ["active", "trialing", "past_due"]
        deadline = time.monotonic() + 60
        while True:  # the sender backdates the history once its backfill is in
            with read_transaction(engine) as conn:
                now = datetime.now(UTC)
                summary = subscription_summary(conn=conn, active_statuses=active, now=now)
                status = stripe_sync_status(conn=conn, delayed_after=600, now=now)
                totals = failing_totals(conn=conn)
                start, end = last_days(days=90, now=now)
                per_day = active_per_plan_per_day(
                    conn=conn, active_statuses=active, start=start, end=end
                )
                weeks = new_and_canceled_per_week(conn=conn, start=start, end=end)
            if any(plan.counts[0] for plan in per_day) or time.monotonic() > deadline:
                break
            time.sleep(1)
        engine.dispose()
        assert summary.active_subscriptions > 100
        assert len(summary.plan_distribution) == 4
        # It opens healthy: nothing fails unless an admin sends the demo's broken event.
        assert status.webhook_health == "healthy" and status.unresolved_failed_events == 0
        assert status.stripe_dashboard_url.startswith("https://dashboard.stripe.com/test/")
        # Payments: a few failing invoices in more than one currency.
        assert len(totals) >= 2 and sum(t.invoices for t in totals) == status.failed_payments_count
        # Trends: 90 days that start well above zero and grow, with churn along the way.
        first = sum(plan.counts[0] or 0 for plan in per_day)
        last = sum(plan.counts[-1] for plan in per_day)
        assert 0 < first < last
        assert last == summary.active_subscriptions
        assert sum(week.new_subscriptions > 0 for week in weeks) >= 10
        assert sum(week.cancellations for week in weeks) > 0
        started = {  # the listener, the dashboard, and the listener's writer process
            grandchild
            for child in child_processes(process.pid)
            for grandchild in [child, *child_processes(child)]
        }
        assert any(writer_of(pid) for pid in started)
    finally:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output
    assert all(wait_gone(pid) for pid in started)  # nothing left running
    assert "Log in as demo / " in output
    assert port_closed(listener) and port_closed(dashboard)
    assert (tmp_path / "data" / "demo.env").stat().st_mode & 0o077 == 0
