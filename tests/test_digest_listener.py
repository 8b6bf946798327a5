"""The morning digest from real listener processes: two on one store send one digest, whose
numbers are the Finance API's; a restart sends none more; a digest missed while no listener ran
goes out when one starts later that day; a bad DIGEST_AT is refused at start."""

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import pytest

from finance_core.store.db import write_transaction
from finance_core.store.models import alert_rules
from tests.support.alerts import (
    CUSTOMER_DATA,
    METRICS_TOKEN,
    assert_nothing_secret,
    listener_env,
    stop,
    stored_texts,
)
from tests.support.api import SUMMARY, SYNC_STATUS, make_token, read
from tests.support.digest import fill
from tests.support.postgres import free_port
from tests.support.receivers import json_receiver
from tests.support.servers import start_listener, wait_for_rounds, wait_healthy


def start(env, count=1):
    """`count` listener processes logging at info (the digest job says when it starts)."""
    ports = [free_port() for _ in range(count)]
    processes = [start_listener(env, port, "--log-level", "info") for port in ports]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    try:
        for url, process in zip(urls, processes, strict=True):
            wait_healthy(url, process)
    except BaseException:
        stop(processes)
        raise
    return processes, urls


def midday_zone() -> ZoneInfo:
    """A zone where it is now between 10:00 and 20:00: hours from midnight either way."""
    now = datetime.now(UTC)
    for offset in range(-12, 15):
        zone = ZoneInfo(f"Etc/GMT{-offset:+d}" if offset else "UTC")  # Etc/GMT-2 is UTC+2
        if 10 <= now.astimezone(zone).hour < 20:
            return zone
    raise AssertionError("some offset puts now at midday")


def digest_at(zone: ZoneInfo, ago: timedelta) -> str:
    return f"{datetime.now(UTC).astimezone(zone) - ago:%H:%M} {zone.key}"


@pytest.mark.slow
def test_two_listeners_send_one_digest_with_the_apis_numbers_and_none_after_a_restart(
    database_url, engine
):
    fill(engine, datetime.now(UTC))
    zone = midday_zone()
    with json_receiver() as hook:
        env = listener_env(
            database_url,
            DIGEST_AT=digest_at(zone, timedelta(minutes=1)),
            DIGEST_URLS=hook.url(),
            DASHBOARD_URL="https://finance.example.com",
        )
        processes, urls = start(env, count=2)
        try:
            (message,) = hook.wait_for(1)
            token = make_token(engine, "finance")
            with httpx.Client(base_url=urls[1], timeout=30) as http:
                summary = read(http, SUMMARY, token)
                status = read(http, SYNC_STATUS, token)
        finally:
            output = stop(processes)
        processes, urls = start(env, count=2)  # a restart, the same day
        try:
            wait_for_rounds(urls, "digest", 3, METRICS_TOKEN)  # three chances each to send
        finally:
            output += stop(processes)
        assert len(hook.messages()) == 1
    assert output.count("morning digest daily at") == 4  # every worker ran the digest job
    assert f"Active subscriptions: {summary['active_subscriptions']} (" in message
    for plan in summary["plan_distribution"]:
        assert f"- {plan['plan_name']}: {plan['count']} (" in message
    assert f"Failed payments: {status['failed_payments_count']} invoices failing" in message
    assert f"Feed: webhook health is {status['webhook_health']} (" in message
    assert "Traceback" not in output
    assert_nothing_secret(message, stored_texts(engine), output)
    for personal in [*CUSTOMER_DATA, "cus_suite0001"]:
        assert personal not in message


@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_digest_missed_earlier_today_is_sent_when_a_listener_starts(database_url, engine):
    fill(engine, datetime.now(UTC))
    zone = midday_zone()
    today = datetime.now(UTC).astimezone(zone).date()
    with write_transaction(engine) as conn:  # yesterday's went out; nothing ran at DIGEST_AT
        conn.execute(
            alert_rules.insert().values(
                rule="digest",
                state=(today - timedelta(days=1)).isoformat(),
                changed_at=datetime.now(UTC),
            )
        )
    with json_receiver() as hook:
        env = listener_env(
            database_url, DIGEST_AT=digest_at(zone, timedelta(hours=3)), DIGEST_URLS=hook.url()
        )
        processes, _ = start(env)
        try:
            (message,) = hook.wait_for(1)
        finally:
            stop(processes)
    assert message.startswith(f"PenguinMails Finance: morning digest for {today}\n")


def test_the_listener_refuses_a_bad_digest_time(tmp_path):
    env = listener_env(f"sqlite:///{tmp_path}/bad.db", DIGEST_AT="8am Berlin")
    process = start_listener(env, free_port())
    _, stderr = process.communicate(timeout=60)
    assert process.returncode != 0
    assert "DIGEST_AT must be a time HH:MM and an IANA time zone" in stderr
