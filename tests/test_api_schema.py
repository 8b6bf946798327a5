"""The running Finance API against its own OpenAPI document, with schemathesis.

The schema is built from the app at import so that schemathesis can parametrize the tests
(its lazy `from_fixture` loader breaks on pytest 9: it sets `Function._nodeid`); the first
test proves that the listener serves exactly that document.
"""

import hypothesis
import pytest
import schemathesis
from schemathesis.specs.openapi.checks import positive_data_acceptance
from sqlalchemy import Engine

from finance_core.settings import Settings
from tests.conftest import deliver, make_settings
from tests.support import stripe_factory as sf
from tests.support.api import bearer, make_token
from webhook_listener import ratelimit
from webhook_listener.app import create_app

# Enough to cover every operation, their negative cases and every status, well under a minute.
MAX_EXAMPLES = 30
UNLIMITED = "100000/minute"

schema = schemathesis.openapi.from_dict(create_app().openapi())


@pytest.fixture
def settings(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Limits far above what a run sends: a 429 would hide the answers the checks are about."""
    # schemathesis probes every operation without credentials (its ignored_auth check), far
    # more often than the per-address limit on failed authentications allows.
    monkeypatch.setattr(ratelimit, "FAILED_AUTH_LIMIT_PER_ADDRESS", UNLIMITED)
    return make_settings(database_url, finance_api_rate_limit=UNLIMITED)


@pytest.fixture
def finance_token(engine: Engine, http) -> str:
    """A reading token, over a store with plans, a failing invoice and a last event."""
    for event in [
        sf.event("product.created", sf.product("prod_pro", "Pro")),
        sf.event("customer.subscription.created", sf.subscription("sub_1", "active", "prod_pro")),
        sf.event("customer.subscription.created", sf.subscription("sub_2", "trialing", "prod_x")),
        sf.event("invoice.payment_failed", sf.invoice("in_1", "open", subscription_id="sub_1")),
        sf.event("invoice.payment_failed", sf.invoice("in_2", "open")),
        sf.event("invoice.paid", sf.invoice("in_2", "paid")),
    ]:
        assert deliver(http, event).status_code == 200
    return make_token(engine, "finance")


def test_the_listener_serves_the_schema_under_test(http):
    assert http.get("/openapi.json").json() == create_app().openapi()


@schema.parametrize()
@hypothesis.settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture],
)
def test_finance_api_conforms_to_its_openapi(case, listener, finance_token):
    excluded = []
    if "cursor" in (case.query or {}):
        # A cursor is opaque: only one a page gave out is valid, which no schema can say; a
        # made-up one is a documented 400, checked in test_api_failed_payments.
        excluded.append(positive_data_acceptance)
    headers = dict(case.headers or {})
    if "Authorization" in headers:
        # The generated value stands for a token: use a real one. A negative case that left the
        # header out keeps it out (a request schemathesis expects refused, and we refuse it);
        # assigning the container lets schemathesis see what the request now is.
        case.headers = {**headers, **bearer(finance_token)}
    case.call_and_validate(base_url=listener.url, excluded_checks=excluded)
