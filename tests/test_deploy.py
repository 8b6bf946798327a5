"""deploy/: the settings sample is complete and refused until filled in; HAProxy takes its file."""

import os
import subprocess

import pytest

from finance_core.settings import Settings, SettingsError, load_settings
from tests.conftest import skip_or_fail
from tests.support.cluster import DEPLOY, HAPROXY_CONFIG, LISTENER_UNIT, unit_setting
from tests.support.postgres import free_port
from tests.support.servers import start_listener
from tests.support.system_packages import which
from webhook_listener.writer import STOP_TIMEOUT_S

SAMPLE = DEPLOY / "finance.env.example"
DASHBOARD_UNIT = DEPLOY / "finance-dashboard.service"
# SPEC section 3, some of them implemented by other parts of the product.
SPEC_SETTINGS = [
    "DATABASE_URL",
    "STRIPE_WEBHOOK_SECRET",
    "STRIPE_WEBHOOK_TOLERANCE",
    "STRIPE_API_KEY",
    "WEBHOOK_DELAYED_AFTER",
    "ACTIVE_SUBSCRIPTION_STATUSES",
    "FINANCE_API_RATE_LIMIT",
    "RATE_LIMIT_STORAGE_URI",
    "WEBHOOK_MAX_BODY_BYTES",
    "DASHBOARD_COOKIE_KEY",
    "DASHBOARD_COOKIE_EXPIRY_DAYS",
    "STRIPE_API_BASE",
    "STRIPE_API_MAX_RPS",
    "ALERT_URLS",
    "ALERT_CHECK_SECONDS",
    "ALERT_REJECTIONS",
    "ALERT_FAILED_PAYMENTS_RISE",
    "DASHBOARD_URL",
    "METRICS_TOKEN",
    "EVENT_RETENTION_DAYS",
]
PLACEHOLDERED = [
    "DATABASE_URL",
    "STRIPE_WEBHOOK_SECRET",
    "STRIPE_API_KEY",
    "DASHBOARD_COOKIE_KEY",
    "METRICS_TOKEN",
]


def sample_values() -> dict[str, str]:
    """The sample as systemd's EnvironmentFile= reads it (KEY=value, # comments)."""
    lines = SAMPLE.read_text().splitlines()
    pairs = [line.split("=", 1) for line in lines if line.strip() and not line.startswith("#")]
    return {key: value for key, value in pairs}


def test_the_sample_names_every_setting_once_each_with_its_meaning():
    lines = SAMPLE.read_text().splitlines()
    keys = [line.split("=", 1)[0] for line in lines if line and not line.startswith("#")]
    assert sorted(keys) == sorted(set(keys))  # each once
    assert set(SPEC_SETTINGS) <= set(keys)
    assert {name.upper() for name in Settings.model_fields} <= set(keys)
    for number, line in enumerate(lines):  # a comment right above each says what it is
        if line and not line.startswith("#"):
            assert lines[number - 1].startswith("# "), f"{line} has no comment"


def test_a_copied_sample_is_refused_until_its_placeholders_are_filled_in():
    values = {key.lower(): value for key, value in sample_values().items()}
    with pytest.raises(SettingsError) as refused:
        load_settings(_env_file=None, **values)
    for variable in PLACEHOLDERED:
        assert variable in str(refused.value)
    assert "changeme" not in str(refused.value)  # the values are not repeated

    filled = {
        **values,
        "database_url": "postgresql+psycopg://finance:s3cret@db.internal:5432/finance",
        "stripe_webhook_secret": "whsec_live_endpoint_secret",
        "stripe_api_key": "rk_live_restricted",
        "dashboard_cookie_key": "k" * 48,
        "metrics_token": "m" * 40,
    }
    settings = load_settings(_env_file=None, **filled)
    assert settings.webhook_secrets() == ["whsec_live_endpoint_secret"]


@pytest.mark.slow
def test_a_listener_started_on_the_unfilled_sample_says_which_settings_and_exits():
    env = {**os.environ, **sample_values()}
    process = start_listener(env, free_port())
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 2
    assert stderr.startswith("error: invalid settings") and len(stderr.splitlines()) == 1
    assert "STRIPE_WEBHOOK_SECRET" in stderr


def test_the_units_start_the_listener_and_dashboard_with_the_settings_file():
    listener = unit_setting(LISTENER_UNIT, "ExecStart").split()
    assert listener[1:3] == ["-m", "webhook_listener"]
    assert listener[listener.index("--port") + 1] == "%i"
    assert "--forwarded-allow-ips" in listener  # it sits behind HAProxy
    dashboard = unit_setting(DASHBOARD_UNIT, "ExecStart").split()
    assert dashboard[1:5] == ["-m", "streamlit", "run", "app.py"]
    for unit in (LISTENER_UNIT, DASHBOARD_UNIT):
        assert unit_setting(unit, "EnvironmentFile") == "/etc/penguinmails-finance/finance.env"
        assert unit_setting(unit, "Restart") == "on-failure"
    # A stop signals listener and writer together; the listener then takes up to twice the
    # writer's timeout to answer what it holds and end its writer: systemd must wait longer.
    assert unit_setting(LISTENER_UNIT, "KillMode") == "control-group"
    assert int(unit_setting(LISTENER_UNIT, "TimeoutStopSec")) > 2 * STOP_TIMEOUT_S
    assert unit_setting(LISTENER_UNIT, "RestartPreventExitStatus") == "2"  # a setting to fix


@pytest.mark.parametrize("complete", [True, False])
def test_haproxy_takes_its_file_and_refuses_it_with_a_listener_unset(tmp_path, complete):
    binary = which("haproxy")
    if binary is None:
        skip_or_fail("no haproxy binary", package="haproxy")
    assert binary is not None
    env = {
        **os.environ,
        "FINANCE_PROXY_BIND": f"127.0.0.1:{free_port()}",
        "FINANCE_PROXY_SOCKET": str(tmp_path / "admin.sock"),
        "FINANCE_LISTENER1": "127.0.0.1:8001",
        "FINANCE_LISTENER2": "127.0.0.1:8002",
    }
    if not complete:
        del env["FINANCE_LISTENER2"]
    checked = subprocess.run(
        [binary, "-c", "-f", str(HAPROXY_CONFIG)], env=env, capture_output=True, text=True
    )
    assert (checked.returncode == 0) is complete, checked.stdout + checked.stderr
