"""What the dashboard's AppTest suites share: the store fixture, signed-in runs, readers."""

import itertools
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from dashboard.auth import SESSION_VERSION_KEY
from finance_core.access.users import authenticator_credentials
from finance_core.feed.ingest import StripeEvent, ingest_event
from finance_core.settings import get_settings
from finance_core.store.db import make_engine, read_transaction
from tests.support import stripe_factory as sf
from tests.support.accounts import PASSWORD, TEAM, add_users

APP = Path(__file__).resolve().parents[2] / "app.py"
COOKIE_KEY = "dashboard-test-cookie-key-0123456789abcdef"
_created = itertools.count(1_790_000_000)
METRICS = ["Active subscriptions", "Webhook health", "Failed payments", "Last webhook"]
# A single sign-on configuration as `.streamlit/secrets.toml` would hold it.
OIDC_SECRETS = {
    "auth": {
        "redirect_uri": "http://localhost:8501/oauth2callback",
        "cookie_secret": "oidc-cookie-secret-0123456789abcdef",
        "client_id": "client",
        "client_secret": "secret-value",
        "server_metadata_url": "https://idp.example.com/.well-known/openid-configuration",
    },
    "dashboard_roles": {"Alice@Example.com": ["finance"], "bob@example.com": []},
}


@pytest.fixture
def dashboard(engine, database_url, monkeypatch):
    """The dashboard's environment pointed at the test store, with no cache left over.

    Users: fiona (finance), ada (admin), nora (no role). No Stripe API key.
    """
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("DASHBOARD_COOKIE_KEY", COOKIE_KEY)
    for variable in (
        "WEBHOOK_DELAYED_AFTER",
        "ACTIVE_SUBSCRIPTION_STATUSES",
        "STRIPE_API_KEY",
        "STRIPE_API_BASE",
        "STRIPE_ENDPOINT_URL",
        "FEED_CHECK_MINUTES",
    ):
        monkeypatch.delenv(variable, raising=False)
    forget()
    add_users(engine, TEAM, PASSWORD)
    yield engine
    forget()


def forget():
    """Settings and Streamlit caches as a new dashboard process would find them."""
    get_settings.cache_clear()
    st.cache_data.clear()
    st.cache_resource.clear()


def app() -> AppTest:
    return AppTest.from_file(APP, default_timeout=60)


def signed_in(username: str, name: str | None = None) -> AppTest:
    """An app whose session streamlit-authenticator already counts as signed in."""
    at = app()
    at.session_state["authentication_status"] = True
    at.session_state["username"] = username
    at.session_state["name"] = name or username.capitalize()
    at.session_state[SESSION_VERSION_KEY] = session_version(username)
    return at.run()


def session_version(username: str) -> str:
    """The user's current session version, as a session signed in now holds it."""
    engine = make_engine(get_settings().database_url)
    try:
        with read_transaction(engine) as conn:
            return authenticator_credentials(conn=conn)["usernames"][username]["session_version"]
    finally:
        engine.dispose()


def feed(engine, event_type, obj, *, at=None, event_id=None, livemode=False):
    event = sf.event(event_type, obj, event_id=event_id, created=next(_created), livemode=livemode)
    return ingest_event(
        engine=engine,
        event=StripeEvent.from_payload(event),
        received_at=at or datetime.now(UTC),
    )


def metrics(at: AppTest) -> dict[str, str]:
    return {metric.label: metric.value for metric in at.metric}


def texts(at: AppTest) -> str:
    """The page's words as the reader sees them (markdown escapes taken out), plain text too."""
    parts = [*at.markdown, *at.caption, *at.info, *at.error, *at.success, *at.warning, *at.text]
    return "\n".join(shown(part.value) for part in parts)


# What dashboard.text.md escapes; a backslash before one of these shows just the character.
_ESCAPED = re.compile(r"\\([\\`*_\[\]()#+\-.!|<>{}~:$])")


def shown(markdown: object) -> str:
    """What a markdown text shows the reader, once the escapes that keep it text are read."""
    return _ESCAPED.sub(r"\1", str(markdown))


def populate(engine, *, with_failure=True, started=None):
    """Three plans, nine subscriptions in five statuses, two failing invoices, one failure.

    The subscriptions started when the factory says (a year ago), or at `started`."""
    for product_id, name in [
        ("prod_pro", "Pro"),
        ("prod_starter", "Starter"),
        ("prod_biz", "Business"),
    ]:
        feed(engine, "product.created", sf.product(product_id, name))
    statuses = ["active"] * 4 + ["trialing", "past_due", "canceled", "unpaid", "active"]
    plans = [
        "prod_pro",
        "prod_pro",
        "prod_starter",
        "prod_biz",
        "prod_pro",
        "prod_starter",
        "prod_pro",
        "prod_biz",
        "prod_starter",
    ]
    for n, (status, product_id) in enumerate(zip(statuses, plans, strict=True)):
        subscription = sf.subscription(f"sub_{n}", status, product_id)
        if started is not None:
            subscription["created"] = subscription["start_date"] = int(started.timestamp())
        feed(engine, "customer.subscription.created", subscription)
    for n in range(2):
        feed(
            engine,
            "invoice.payment_failed",
            sf.invoice(f"in_{n}", "open", subscription_id=f"sub_{n}"),
        )
    feed(engine, "customer.created", {"id": "cus_1", "object": "customer"})
    if with_failure:
        broken = sf.subscription("sub_broken", "active", "prod_pro")
        del broken["status"]
        feed(engine, "customer.subscription.updated", broken, event_id="evt_broken")
