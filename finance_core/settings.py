"""Process settings, read once from the environment (and `.env`) and validated at start."""

from datetime import time
from functools import lru_cache
from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import Annotated
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from finance_core.store.models import KEEP_LATEST_REJECTIONS

PLACEHOLDER_SECRETS = frozenset({"", "changeme", "changethis", "secret", "xxx"})
MIN_COOKIE_KEY_LENGTH = 32
# Stripe retries a delivery for up to 3 days and an event can be resent by hand for 30: an
# event pruned sooner would be taken for a new one when it comes again.
MIN_EVENT_RETENTION_DAYS = 35


class SettingsError(RuntimeError):
    """A setting is missing or invalid; the message names the variable."""


def _split_commas(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def _is_placeholder(value: str) -> bool:
    return value.strip().lower() in PLACEHOLDER_SECRETS


def _plain(value: object) -> str:
    return value.get_secret_value() if isinstance(value, SecretStr) else str(value)


def digest_time(value: str) -> tuple[time, ZoneInfo]:
    """`08:00 Europe/Berlin` as (08:00, the zone); ValueError saying what is wrong."""
    clock, _, zone = value.strip().partition(" ")
    try:
        at = time.fromisoformat(clock)
    except ValueError:
        at = None
    if at is None or len(clock) != len("HH:MM") or not zone.strip():
        raise ValueError(
            f"must be a time HH:MM and an IANA time zone, such as 08:00 Europe/Berlin, "
            f"not {value!r}"
        )
    try:
        return at, ZoneInfo(zone.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"names an unknown time zone {zone.strip()!r}; use an IANA name such as "
            "Europe/Berlin, America/New_York or UTC"
        ) from None


class Settings(BaseSettings):
    """Everything configurable, named as the environment variables of SPEC section 3."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)

    database_url: str = "sqlite:///data/finance.db"
    stripe_webhook_secret: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    stripe_webhook_tolerance: int = Field(default=300, ge=0)
    stripe_api_key: SecretStr | None = None
    # Where `sync`, `replay` and the thin-event resolver reach Stripe's API; a local stand-in
    # in tests.
    stripe_api_base: str = "https://api.stripe.com"
    # Requests a second the thin-event resolver may make, all listener processes together.
    stripe_api_max_rps: int = Field(default=20, ge=1, le=1000)
    webhook_delayed_after: int = Field(default=600, gt=0)
    # The feed check (SPEC 17): this listener's public `/webhooks/stripe` as configured in
    # Stripe (empty: the check is off), and how often one listener asks Stripe about it
    # (fractions allowed, down to every 3 seconds, so that a test sees two checks quickly).
    stripe_endpoint_url: str = ""
    feed_check_minutes: float = Field(default=60, ge=0.05)
    active_subscription_statuses: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["active", "trialing", "past_due"]
    )
    finance_api_rate_limit: str = "100/minute"
    rate_limit_storage_uri: str = "memory://"
    webhook_max_body_bytes: int = Field(default=1_048_576, gt=0)
    dashboard_cookie_key: SecretStr | None = None
    dashboard_cookie_expiry_days: float = Field(default=1, gt=0)
    # The proxies in front of the dashboard whose X-Forwarded-For the sign-in limit believes
    # (SPEC 19): addresses or networks, comma-separated; empty, the peer address counts.
    dashboard_trusted_proxies: Annotated[list[IPv4Network | IPv6Network], NoDecode] = Field(
        default_factory=list
    )
    # Alerts and metrics (SPEC 12). Apprise URLs hold their channels' credentials: secrets.
    alert_urls: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    alert_check_seconds: int = Field(default=60, ge=1)
    # The rejections rule counts the kept rejections: it cannot see more than are kept.
    alert_rejections: int = Field(default=20, ge=1, le=KEEP_LATEST_REJECTIONS)
    alert_failed_payments_rise: int = Field(default=10, ge=1)
    dashboard_url: str = ""
    metrics_token: SecretStr | None = None
    event_retention_days: int = 90
    # The morning digest (SPEC 16): "HH:MM Zone/Name", or empty for none; its channels
    # (Apprise URLs, secrets too), when empty those of ALERT_URLS.
    digest_at: str = ""
    digest_urls: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)

    @field_validator("stripe_webhook_secret", mode="before")
    @classmethod
    def _secrets_from_commas(cls, value: object) -> object:
        if value is None:
            return []
        parts = _split_commas(value)
        if isinstance(parts, list):
            for part in parts:
                text = part.get_secret_value() if isinstance(part, SecretStr) else str(part)
                if _is_placeholder(text):
                    raise ValueError("is a placeholder; use the whsec_... secret from Stripe")
                if not text.startswith("whsec_"):
                    raise ValueError("each secret must start with whsec_")
        return parts

    @field_validator("dashboard_trusted_proxies", mode="before")
    @classmethod
    def _proxies_from_commas(cls, value: object) -> object:
        parts = _split_commas(value)
        if not isinstance(parts, list):
            return parts
        networks = []
        for part in parts:
            try:
                networks.append(ip_network(str(part), strict=False))
            except ValueError:
                raise ValueError(
                    f"must be IP addresses or networks, comma-separated, not {str(part)!r}"
                ) from None
        return networks

    @field_validator("active_subscription_statuses", mode="before")
    @classmethod
    def _statuses_from_commas(cls, value: object) -> object:
        parts = _split_commas(value)
        if isinstance(parts, list) and not parts:
            raise ValueError("must name at least one status")
        return parts

    @field_validator("stripe_api_key", mode="before")
    @classmethod
    def _api_key_not_placeholder(cls, value: object) -> object:
        if value is None or (isinstance(value, str) and value.strip() == ""):
            return None
        if isinstance(value, str) and _is_placeholder(value):
            raise ValueError("is a placeholder; use a restricted or secret key from Stripe")
        return value

    @field_validator("dashboard_cookie_key", mode="before")
    @classmethod
    def _cookie_key_strong(cls, value: object) -> object:
        if value is None:
            return None
        text = value.get_secret_value() if isinstance(value, SecretStr) else str(value)
        if _is_placeholder(text) or len(text) < MIN_COOKIE_KEY_LENGTH:
            raise ValueError(
                f"must be a random string of at least {MIN_COOKIE_KEY_LENGTH} characters"
            )
        return value

    @field_validator("database_url")
    @classmethod
    def _database_password_not_placeholder(cls, value: str) -> str:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            password = make_url(value).password
        except ArgumentError:
            return value  # not a URL: make_engine says so
        if password and _is_placeholder(str(password)):
            raise ValueError("has a placeholder password; use the database user's real one")
        return value

    @field_validator("alert_urls", "digest_urls", mode="before")
    @classmethod
    def _alert_urls_usable(cls, value: object) -> object:
        if value is None:
            return []
        parts = _split_commas(value)
        if isinstance(parts, list) and parts:
            from finance_core.alerts.channels import unusable_positions

            bad = unusable_positions([_plain(part) for part in parts])
            if bad:
                # Never the URL itself: it holds the channel's token or password.
                entries = ", ".join(str(position) for position in bad)
                which = (
                    f"entry {entries} of {len(parts)} is not a URL"
                    if len(bad) == 1
                    else (f"entries {entries} of {len(parts)} are not URLs")
                )
                raise ValueError(
                    f"{which} Apprise can send to (check the scheme and fields; not shown "
                    "here, since an Apprise URL holds a token or password)"
                )
        return parts

    @field_validator("digest_at")
    @classmethod
    def _digest_at_parses(cls, value: str) -> str:
        value = " ".join(value.split())
        if value:
            digest_time(value)  # raises ValueError naming what is wrong
        return value

    @field_validator("metrics_token", mode="before")
    @classmethod
    def _metrics_token_not_placeholder(cls, value: object) -> object:
        if value is None or (isinstance(value, str) and value.strip() == ""):
            return None  # /metrics is open
        if _is_placeholder(_plain(value)):
            raise ValueError("is a placeholder; use a long random token, or leave it empty")
        return value

    @field_validator("dashboard_url")
    @classmethod
    def _dashboard_url_is_http(cls, value: str) -> str:
        value = value.strip()
        if not value:
            return ""
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                "must be the dashboard's http(s) address, such as https://finance.example.com"
            )
        return value.rstrip("/")

    @field_validator("event_retention_days")
    @classmethod
    def _retention_outlasts_redeliveries(cls, value: int) -> int:
        if value < MIN_EVENT_RETENTION_DAYS:
            raise ValueError(
                f"must be at least {MIN_EVENT_RETENTION_DAYS} (days), not {value}: Stripe "
                "retries a delivery for up to 3 days and an event can be resent by hand for "
                "30, and an event pruned before then would be applied again as a new one"
            )
        return value

    @field_validator("stripe_api_base")
    @classmethod
    def _api_base_is_http(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError("must be an http(s) URL such as https://api.stripe.com")
        return value.rstrip("/")

    @field_validator("finance_api_rate_limit")
    @classmethod
    def _rate_limit_parses(cls, value: str) -> str:
        from limits import parse

        try:
            parse(value)
        except ValueError as exc:
            raise ValueError(f"is not a rate limit such as 100/minute ({exc})") from None
        return value

    def webhook_secrets(self) -> list[str]:
        """The signing secrets, or a clear error when none is configured."""
        if not self.stripe_webhook_secret:
            raise SettingsError(
                "STRIPE_WEBHOOK_SECRET is not set: the listener needs the whsec_... signing "
                "secret of your Stripe webhook endpoint (several may be given, comma-separated)"
            )
        return [secret.get_secret_value() for secret in self.stripe_webhook_secret]

    def api_key(self) -> str:
        """The Stripe API key, or a clear error when none is configured."""
        if self.stripe_api_key is None:
            raise SettingsError(
                "STRIPE_API_KEY is not set: sync and re-fetching events need a restricted "
                "key (read access to products, prices, subscriptions, invoices and events)"
            )
        return self.stripe_api_key.get_secret_value()

    def cookie_key(self) -> str:
        """The dashboard cookie signing key, or a clear error when none is configured."""
        if self.dashboard_cookie_key is None:
            raise SettingsError(
                "DASHBOARD_COOKIE_KEY is not set: the dashboard needs a long random key "
                f"(at least {MIN_COOKIE_KEY_LENGTH} characters) to sign its login cookie"
            )
        return self.dashboard_cookie_key.get_secret_value()

    def alert_channels(self) -> list[str]:
        """The Apprise URLs alerts go to (none: alerts are kept but not sent)."""
        return [url.get_secret_value() for url in self.alert_urls]

    def digest_channels(self) -> list[str]:
        """The Apprise URLs the morning digest goes to: DIGEST_URLS, else ALERT_URLS."""
        urls = self.digest_urls or self.alert_urls
        return [url.get_secret_value() for url in urls]

    def digest_schedule(self) -> tuple[time, ZoneInfo] | None:
        """DIGEST_AT as a local time and its zone, or None when the digest is off."""
        return digest_time(self.digest_at) if self.digest_at else None

    def metrics_bearer(self) -> str | None:
        """The token /metrics asks for, or None when it is open."""
        return self.metrics_token.get_secret_value() if self.metrics_token else None


def load_settings(**overrides: object) -> Settings:
    """Read and validate the settings, turning pydantic's report into one clear message."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            variable = "_".join(str(part) for part in error["loc"][:1]).upper()
            message = error["msg"].removeprefix("Value error, ")
            problems.append(f"{variable} {message}")
        raise SettingsError("invalid settings: " + "; ".join(problems)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read on first use (never at import)."""
    return load_settings()
