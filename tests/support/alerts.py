"""Alert test data and checks: the secrets an alert must never carry, the rejections alert,
and listener processes started with alert settings."""

import os
import re

from sqlalchemy import select

from finance_core.settings import Settings
from finance_core.store.db import read_transaction
from finance_core.store.models import alert_deliveries, alert_rules, alert_samples, alerts
from tests.support import stripe_factory as sf
from tests.support.postgres import free_port
from tests.support.receivers import SMTP_PASSWORD
from tests.support.servers import start_listener, wait_healthy

API_KEY = "rk_test_alerts_key_8c1d5e0a"
METRICS_TOKEN = "metrics-token-alerts-3f9a71"
HOOK_PASSWORD = "hook-pass-77e1a0"
HOOK_PATH_TOKEN = "T0KENinTHEpath9d2c"
SECRETS = [sf.SECRET, API_KEY, METRICS_TOKEN, HOOK_PASSWORD, HOOK_PATH_TOKEN, SMTP_PASSWORD]
CUSTOMER_DATA = ["jane.doe@example.com", "Jane Doe", "+15555550123", "1 Penguin Way"]


def stored_texts(engine):
    """Every text the alert tables hold."""
    with read_transaction(engine) as conn:
        rows = [
            *conn.execute(select(alerts)).all(),
            *conn.execute(select(alert_deliveries)).all(),
            *conn.execute(select(alert_rules)).all(),
            *conn.execute(select(alert_samples)).all(),
        ]
    return "\n".join(str(value) for row in rows for value in row)


def assert_nothing_secret(*texts):
    everything = "\n".join(texts)
    for secret in SECRETS + CUSTOMER_DATA:
        assert secret not in everything


def assert_rejections_alert(
    text: str, sent: int, threshold: int = Settings.model_fields["alert_rejections"].default
) -> None:
    """The rejections alert, started once the count reached ALERT_REJECTIONS (its default).

    Its number is the count when a worker first saw the threshold crossed: any from the
    threshold to all that were sent, as the flood may still be arriving when it looks.
    """
    found = re.match(r"PenguinMails Finance: (\d+) deliveries rejected in 5 minutes", text)
    assert found, text
    assert threshold <= int(found[1]) <= sent
    assert "mostly bad_signature" in text
    assert "check STRIPE_WEBHOOK_SECRET" in text


DASHBOARD = "https://finance.example.com"


def listener_env(database_url: str, *urls: str, **settings: str) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("ALERT_", "STRIPE_"))},
        "DATABASE_URL": database_url,
        "STRIPE_WEBHOOK_SECRET": sf.SECRET,
        "STRIPE_API_KEY": API_KEY,
        "METRICS_TOKEN": METRICS_TOKEN,
        "ALERT_URLS": ",".join(urls),
        "ALERT_CHECK_SECONDS": "1",
        **{name.upper(): value for name, value in settings.items()},
    }


def start(env, count=1):
    """`count` listener processes on the store of `env`, once each answers /healthz."""
    ports = [free_port() for _ in range(count)]
    processes = [start_listener(env, port) for port in ports]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    try:
        for url, process in zip(urls, processes, strict=True):
            wait_healthy(url, process)
    except BaseException:
        stop(processes)
        raise
    return processes, urls


def stop(processes) -> str:
    """End the processes; their stderr together."""
    output = ""
    for process in processes:
        process.terminate()
    for process in processes:
        _, stderr = process.communicate(timeout=60)
        output += stderr
    return output
