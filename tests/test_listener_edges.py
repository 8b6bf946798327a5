"""The listener at its edges (SPEC 19): no third-party scripts, no Host-built redirects, log lines
that a payload cannot forge. Against `python -m webhook_listener` as operators run it.
"""

import os

import httpx
import pytest

from finance_core.log_text import loggable
from tests.conftest import deliver
from tests.support import stripe_factory as sf
from tests.support.api import SUMMARY
from tests.support.postgres import free_port
from tests.support.servers import start_listener, wait_healthy


def start(tmp_path):
    """`python -m webhook_listener --log-level info` on a new store; the process and its URL."""
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("STRIPE_")},
        "DATABASE_URL": f"sqlite:///{tmp_path}/finance.db",
        "STRIPE_WEBHOOK_SECRET": sf.SECRET,
    }
    process = start_listener(env, port, "--log-level", "info")
    url = f"http://127.0.0.1:{port}"
    wait_healthy(url, process)
    return process, url


@pytest.fixture(scope="module")
def listener(tmp_path_factory):
    process, url = start(tmp_path_factory.mktemp("edges"))
    yield url
    process.terminate()
    process.communicate(timeout=30)


def test_docs_pages_are_off_and_the_schema_stays(listener):
    url = listener
    for path in ("/docs", "/redoc", "/docs/oauth2-redirect"):
        response = httpx.get(f"{url}{path}")
        assert response.status_code == 404, path
        assert "cdn" not in response.text.lower()
    schema = httpx.get(f"{url}/openapi.json")
    assert schema.status_code == 200 and SUMMARY in schema.json()["paths"]


def test_a_trailing_slash_is_a_404_not_a_redirect_to_the_host_header(listener):
    url = listener
    for path in (f"{SUMMARY}/", "/healthz/", "/webhooks/stripe/"):
        response = httpx.get(
            f"{url}{path}",
            headers={"Host": "attacker.example", "Authorization": "Bearer pmf_x"},
            follow_redirects=False,
        )
        assert response.status_code == 404, (path, response.status_code)
        assert "location" not in response.headers


def test_ids_and_types_from_payloads_cannot_forge_a_log_line(tmp_path):
    process, url = start(tmp_path)
    # A line break in an id is refused at the door (400): it is never stored nor logged.
    forged = sf.event(
        "customer.subscription.updated",
        sf.subscription("sub_f", "active", "prod_h"),
        event_id="evt_forged\nERROR:webhook_listener:FORGED line",
    )
    # A bidi override is a valid id; its failure is logged with the override escaped.
    broken = sf.subscription("sub_h", "active", "prod_h")
    del broken["status"]  # fails to apply: the failure is logged with the id and type
    reversed_id = sf.event("customer.subscription.updated", broken, event_id="evt_bidi\u202eevil")
    try:
        with httpx.Client(base_url=url, timeout=10) as http:
            assert deliver(http, forged).status_code == 400
            # A failed event is answered 500 (Stripe retries it); it is logged either way.
            deliver(http, reversed_id)
    finally:
        process.terminate()
        stdout, stderr = process.communicate(timeout=30)
    lines = (stdout + stderr).splitlines()
    assert not any(line.startswith("ERROR:webhook_listener:FORGED") for line in lines), lines
    failed = [line for line in lines if "failed" in line and "evt_bidi" in line]
    assert len(failed) == 1, lines
    assert "evt_bidi\\u202eevil" in failed[0]
    assert not any("\u202e" in line for line in lines)


def test_loggable_escapes_what_could_break_a_line_and_keeps_ids_as_they_are():
    assert loggable("evt_1NwXyZ") == "evt_1NwXyZ"
    assert loggable("customer.subscription.updated") == "customer.subscription.updated"
    assert loggable("a\nb\rc\u2028d\u202ee") == "a\\x0ab\\x0dc\\u2028d\\u202ee"
    assert loggable("C:\\x0a") == "C:\\\\x0a"  # a spelled-out escape stays visibly different
    assert loggable("x" * 500).endswith("…") and len(loggable("x" * 500)) == 201
    assert loggable(None) == ""
