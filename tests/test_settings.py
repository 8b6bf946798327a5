"""Settings: clear errors naming the variable, never a silent default for a secret."""

import pytest

from finance_core.settings import SettingsError, load_settings


def load(**values):
    return load_settings(_env_file=None, **values)


def test_defaults_match_the_spec(monkeypatch):
    for name in ("DATABASE_URL", "STRIPE_WEBHOOK_SECRET", "ACTIVE_SUBSCRIPTION_STATUSES"):
        monkeypatch.delenv(name, raising=False)
    settings = load()
    assert settings.database_url == "sqlite:///data/finance.db"
    assert settings.stripe_webhook_tolerance == 300
    assert settings.webhook_delayed_after == 600
    assert settings.active_subscription_statuses == ["active", "trialing", "past_due"]
    assert settings.finance_api_rate_limit == "100/minute"
    assert settings.rate_limit_storage_uri == "memory://"
    assert settings.webhook_max_body_bytes == 1_048_576
    assert settings.dashboard_cookie_expiry_days == 1


def test_comma_separated_values_from_the_environment(monkeypatch):
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", "whsec_old_one, whsec_new_one")
    monkeypatch.setenv("ACTIVE_SUBSCRIPTION_STATUSES", "active,trialing")
    settings = load()
    assert settings.webhook_secrets() == ["whsec_old_one", "whsec_new_one"]
    assert settings.active_subscription_statuses == ["active", "trialing"]


def test_secrets_are_not_shown_in_repr(monkeypatch):
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", "whsec_very_private_value")
    assert "whsec_very_private_value" not in repr(load())


def test_missing_webhook_secret_names_the_variable(monkeypatch):
    monkeypatch.delenv("STRIPE_WEBHOOK_SECRET", raising=False)
    with pytest.raises(SettingsError, match="STRIPE_WEBHOOK_SECRET is not set"):
        load().webhook_secrets()


@pytest.mark.parametrize("value", ["changeme", "secret", "xxx", "CHANGETHIS"])
def test_placeholder_webhook_secret_is_refused(monkeypatch, value):
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", value)
    with pytest.raises(SettingsError, match="STRIPE_WEBHOOK_SECRET is a placeholder"):
        load()


def test_webhook_secret_must_look_like_one(monkeypatch):
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", "sk_test_wrong_kind_of_key")
    with pytest.raises(SettingsError, match="STRIPE_WEBHOOK_SECRET each secret must start"):
        load()


@pytest.mark.parametrize("value", ["changeme", "short-but-not-placeholder"])
def test_weak_cookie_key_is_refused(monkeypatch, value):
    monkeypatch.setenv("DASHBOARD_COOKIE_KEY", value)
    with pytest.raises(SettingsError, match="DASHBOARD_COOKIE_KEY must be a random string"):
        load()


def test_missing_cookie_key_names_the_variable(monkeypatch):
    monkeypatch.delenv("DASHBOARD_COOKIE_KEY", raising=False)
    with pytest.raises(SettingsError, match="DASHBOARD_COOKIE_KEY is not set"):
        load().cookie_key()


def test_placeholder_api_key_is_refused(monkeypatch):
    monkeypatch.setenv("STRIPE_API_KEY", "xxx")
    with pytest.raises(SettingsError, match="STRIPE_API_KEY is a placeholder"):
        load()


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("FINANCE_API_RATE_LIMIT", "lots", "FINANCE_API_RATE_LIMIT is not a rate limit"),
        ("WEBHOOK_DELAYED_AFTER", "0", "WEBHOOK_DELAYED_AFTER"),
        ("WEBHOOK_MAX_BODY_BYTES", "ten", "WEBHOOK_MAX_BODY_BYTES"),
        ("ACTIVE_SUBSCRIPTION_STATUSES", " , ", "ACTIVE_SUBSCRIPTION_STATUSES must name"),
    ],
)
def test_invalid_values_name_the_variable(monkeypatch, variable, value, message):
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError, match=message):
        load()


@pytest.mark.parametrize("password", ["changeme", "CHANGETHIS", "xxx"])
def test_a_placeholder_database_password_names_the_variable_not_the_password(password):
    with pytest.raises(SettingsError) as refused:
        load(database_url=f"postgresql+psycopg://finance:{password}@db.internal/finance")
    assert "DATABASE_URL has a placeholder password" in str(refused.value)
    assert password not in str(refused.value)


def test_a_database_url_without_a_password_is_fine():
    """Peer or trust authentication, or a password from ~/.pgpass or PGPASSWORD."""
    url = "postgresql+psycopg://finance@db.internal/finance"
    assert load(database_url=url).database_url == url


def test_alert_and_metrics_defaults_match_the_spec(monkeypatch):
    for name in ("ALERT_URLS", "DASHBOARD_URL", "METRICS_TOKEN", "ALERT_CHECK_SECONDS"):
        monkeypatch.delenv(name, raising=False)
    settings = load()
    assert settings.alert_channels() == []
    assert settings.alert_check_seconds == 60
    assert settings.alert_rejections == 20
    assert settings.alert_failed_payments_rise == 10
    assert settings.dashboard_url == ""
    assert settings.metrics_bearer() is None


def test_alert_urls_are_secrets_split_on_commas(monkeypatch):
    urls = "json://hook:hunter2-token@127.0.0.1:8123/hooks, mailtos://me:pw-1234@example.com"
    monkeypatch.setenv("ALERT_URLS", urls)
    monkeypatch.setenv("DASHBOARD_URL", "https://finance.example.com/")
    settings = load()
    assert settings.alert_channels() == [url.strip() for url in urls.split(",")]
    assert settings.dashboard_url == "https://finance.example.com"
    assert "hunter2-token" not in repr(settings) and "pw-1234" not in repr(settings)


def test_an_unparsable_alert_url_names_its_position_never_the_url(monkeypatch):
    bad = "msteams://not-enough/parts-hunter2"
    monkeypatch.setenv("ALERT_URLS", f"json://127.0.0.1:8123/hooks, {bad}")
    with pytest.raises(SettingsError) as error:
        load()
    assert "ALERT_URLS entry 2 of 2 is not a URL Apprise can send to" in str(error.value)
    assert "hunter2" not in str(error.value)


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("ALERT_CHECK_SECONDS", "0", "ALERT_CHECK_SECONDS Input should be greater than or equal"),
        ("ALERT_REJECTIONS", "0", "ALERT_REJECTIONS Input should be greater than or equal"),
        ("ALERT_REJECTIONS", "999999", "ALERT_REJECTIONS Input should be less than or equal"),
        ("ALERT_FAILED_PAYMENTS_RISE", "lots", "ALERT_FAILED_PAYMENTS_RISE"),
        ("DASHBOARD_URL", "finance.example.com", "DASHBOARD_URL must be the dashboard's http"),
        ("DASHBOARD_URL", "ftp://finance.example.com", "DASHBOARD_URL must be"),
        ("METRICS_TOKEN", "changeme", "METRICS_TOKEN is a placeholder"),
    ],
)
def test_invalid_alert_settings_name_the_variable(monkeypatch, variable, value, message):
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError, match=message):
        load()


def test_an_empty_metrics_token_leaves_metrics_open(monkeypatch):
    monkeypatch.setenv("METRICS_TOKEN", "")
    assert load().metrics_bearer() is None
    monkeypatch.setenv("METRICS_TOKEN", "metrics-token-5f0c1e")
    assert load().metrics_bearer() == "metrics-token-5f0c1e"


def test_event_retention_defaults_to_90_days_and_refuses_less_than_35(monkeypatch):
    monkeypatch.delenv("EVENT_RETENTION_DAYS", raising=False)
    assert load().event_retention_days == 90
    monkeypatch.setenv("EVENT_RETENTION_DAYS", "35")
    assert load().event_retention_days == 35
    monkeypatch.setenv("EVENT_RETENTION_DAYS", "10")
    with pytest.raises(SettingsError, match="EVENT_RETENTION_DAYS must be at least 35") as refused:
        load()
    assert "resent by hand for 30" in str(refused.value)
