"""The feed check (SPEC 17) on the Webhooks page (AppTest): the verdict in words, Stripe's text
shown as text, the link to fix it, and an admin's Check now asking the stand-in for Stripe."""

import time
from datetime import UTC, datetime

from dashboard.text import md
from finance_core.access import audit
from finance_core.feed.feed_check import REQUIRED_EVENTS, run_feed_check
from tests.conftest import make_settings
from tests.support import apptest
from tests.support import stripe_factory as sf
from tests.support.apptest import feed, metrics, signed_in, texts
from tests.support.stripe_api import API_KEY, event_destination, webhook_endpoint

URL = "https://finance.example.com/webhooks/stripe"
WEBHOOKS = "pages/webhooks.py"
# A disabled destination's reason is Stripe's text: markdown in it must stay text.
HOSTILE_REASON = "[Sign in again](https://evil.example/) **now**"

dashboard = apptest.dashboard  # the fixture: the test store, its users, no cache left over


def listener_check(engine, stripe_api):
    """The check as a listener's job runs it, with the listener's settings."""
    settings = make_settings(
        engine.url.render_as_string(hide_password=False),
        stripe_api_key=API_KEY,
        stripe_api_base=stripe_api.url,
        stripe_endpoint_url=URL,
    )
    return run_feed_check(engine=engine, settings=settings, now=datetime.now(UTC), force=True)


def dashboard_can_check(monkeypatch, stripe_api):
    monkeypatch.setenv("STRIPE_API_KEY", API_KEY)
    monkeypatch.setenv("STRIPE_API_BASE", stripe_api.url)
    monkeypatch.setenv("STRIPE_ENDPOINT_URL", URL)
    apptest.forget()


def button(at, label):
    return next(b for b in at.button if b.label == label)


def test_the_page_shows_the_problem_in_words_with_stripes_text_as_text(dashboard, stripe_api):
    stripe_api.put(
        "event_destinations",
        event_destination("ed_ours", URL, ["*"], status="disabled", disabled_reason=HOSTILE_REASON),
    )
    listener_check(dashboard, stripe_api)

    at = signed_in("fiona").switch_page(WEBHOOKS).run()

    assert not at.exception
    assert metrics(at)["Webhook health"] == "Error"
    assert "Problem: the event destination ed_ours is disabled" in texts(at)
    assert "Enable it in the Stripe Dashboard" in texts(at)
    # Stripe's reason is there to read, escaped so that no link or bold comes of it, both in
    # the result and in the health reason under the badge.
    assert f"Stripe's reason: {HOSTILE_REASON}" in texts(at)
    problem = next(str(e.value) for e in at.error if str(e.value).startswith("Problem: "))
    health = next(str(c.value) for c in at.caption if "Stripe's reason" in str(c.value))
    for source in (problem, health):
        assert md(HOSTILE_REASON) in source
        assert HOSTILE_REASON not in source
    assert "on the listener's schedule" in texts(at)
    assert metrics(at)["Missed events recovered"] == "0"
    found = next(frame.value for frame in at.dataframe if "Payload" in frame.value)
    assert list(zip(found["Id"], found["Status"], found["Payload"], strict=True)) == [
        ("ed_ours", "disabled", "thin")
    ]
    links = [button.proto.url for button in at.get("link_button")]
    assert "https://dashboard.stripe.com/webhooks" in links
    # Finance reads the result; Check now is for admins.
    assert not [b for b in at.button if b.label == "Check now"]
    assert "An admin can run the check now." in texts(at)


def test_an_admins_check_now_asks_stripe_and_shows_what_it_found(
    dashboard, monkeypatch, stripe_api
):
    feed(dashboard, "product.created", sf.product("prod_pro", "Pro"))  # webhooks are arriving
    without_failed = [name for name in REQUIRED_EVENTS if name != "invoice.payment_failed"]
    stripe_api.put("webhook_endpoints", webhook_endpoint("we_ours", URL, without_failed))
    missed = sf.event("product.created", sf.product("prod_missed", "Missed"))
    missed["created"] = int(time.time()) - 3600
    stripe_api.put("events", {**missed, "_delivery_success": False})
    dashboard_can_check(monkeypatch, stripe_api)

    at = signed_in("ada").switch_page(WEBHOOKS).run()
    assert "Not checked yet" in texts(at)
    assert stripe_api.pages_requested("webhook_endpoints") == []

    button(at, "Check now").click().run()

    assert not at.exception
    assert len(stripe_api.pages_requested("webhook_endpoints")) == 1
    page = texts(at)
    assert "Checked just now: a problem (below); 1 missed events recovered." in page
    assert "failed payments will be wrong: Stripe does not send invoice.payment_failed here" in page
    assert "by ada (Check now)" in page
    assert metrics(at)["Webhook health"] == "Error"
    assert metrics(at)["Missed events recovered"] == "1"
    actions = audit.entries(engine=dashboard, filters=audit.AuditFilter(action="feed_check_run"))
    assert [(entry.actor, entry.target) for entry in actions] == [("ada", "feed check")]

    # Fixed in Stripe's Dashboard: the next Check now says so, and health recovers.
    stripe_api.put("webhook_endpoints", webhook_endpoint("we_ours", URL, ["*"]))
    button(at, "Check now").click().run()

    assert not at.exception
    page = texts(at)
    assert "Checked just now: the feed is complete; 0 missed events recovered." in page
    assert "OK: Stripe has our endpoint enabled" in page
    assert metrics(at)["Webhook health"] == "Healthy"
    assert len(stripe_api.pages_requested("webhook_endpoints")) == 2


def test_a_dashboard_without_the_settings_says_how_and_leaves_the_listeners_result(
    dashboard, monkeypatch, stripe_api
):
    at = signed_in("ada").switch_page(WEBHOOKS).run()
    assert "Not checked yet. To turn it on, set STRIPE_ENDPOINT_URL on the listener" in texts(at)

    stripe_api.put("webhook_endpoints", webhook_endpoint("we_ours", URL, ["invoice.paid"]))
    listener_check(dashboard, stripe_api)
    monkeypatch.setenv("STRIPE_API_KEY", API_KEY)  # the dashboard has a key, but no endpoint URL
    apptest.forget()

    at = signed_in("ada").switch_page(WEBHOOKS).run()

    assert not at.exception
    assert not [b for b in at.button if b.label == "Check now"]
    page = texts(at)
    assert "Set STRIPE_ENDPOINT_URL and STRIPE_API_KEY for the dashboard to check from here" in page
    # The listener's finding stands.
    assert "Problem: active subscriptions and the plan distribution will be wrong" in page
