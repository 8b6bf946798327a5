"""The feed check (SPEC 17) from a real listener process: its background worker asks the stand-in
for Stripe's API on its own schedule, health and /metrics turn to error while Stripe shows our
endpoint disabled, and back once it is enabled again."""

from datetime import UTC, datetime

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from finance_core.store.db import read_transaction
from finance_core.views.queries import stripe_sync_status
from tests.support import stripe_factory as sf
from tests.support.api import SYNC_STATUS, bearer, make_token, read
from tests.support.servers import ListenerProcess
from tests.support.stripe_api import API_KEY, webhook_endpoint
from tests.support.waiting import wait_until

URL = "https://finance.example.com/webhooks/stripe"
METRICS_TOKEN = "metrics-token-feed-check-5b7e2c"


def feed_samples(http: httpx.Client) -> dict[str, float]:
    """/metrics' feed check gauges and the webhook health state set to 1."""
    response = http.get("/metrics", headers=bearer(METRICS_TOKEN))
    assert response.status_code == 200, response.text
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name.startswith("finance_feed_check"):
                samples[sample.name] = sample.value
            elif sample.name == "finance_webhook_health" and sample.value == 1:
                samples["health " + sample.labels["state"]] = 1
    return samples


def health_reason(engine) -> str:
    with read_transaction(engine) as conn:
        status = stripe_sync_status(conn=conn, delayed_after=600, now=datetime.now(UTC))
    return status.health_reason


@pytest.mark.slow
def test_the_listeners_worker_finds_a_disabled_endpoint_and_sees_it_fixed(
    engine, database_url, stripe_api
):
    stripe_api.put("webhook_endpoints", webhook_endpoint("we_ours", URL, ["*"], status="disabled"))
    token = make_token(engine, "finance")
    listener = ListenerProcess(
        database_url,
        "--jobs",
        "feed_check",
        STRIPE_API_KEY=API_KEY,
        STRIPE_API_BASE=stripe_api.url,
        STRIPE_ENDPOINT_URL=URL,
        FEED_CHECK_MINUTES="0.05",  # every 3 seconds
        METRICS_TOKEN=METRICS_TOKEN,
    ).start()
    try:
        with httpx.Client(base_url=listener.url, timeout=10) as http:

            def feed_broken() -> bool:
                samples = feed_samples(http)
                status = read(http, SYNC_STATUS, token)
                return (
                    samples.get("finance_feed_check_ok") == 0
                    and "health error" in samples
                    and status["webhook_health"] == "error"
                )

            wait_until(feed_broken, timeout=30, every=0.2, what="health error from the check")
            assert "the webhook endpoint we_ours is disabled" in health_reason(engine)

            # Enabled again in Stripe's Dashboard, and a webhook arrives through it.
            stripe_api.put("webhook_endpoints", webhook_endpoint("we_ours", URL, ["*"]))
            body, headers = sf.signed(sf.event("product.created", sf.product("prod_fc", "Pro")))
            assert http.post("/webhooks/stripe", content=body, headers=headers).status_code == 200

            def feed_fixed() -> bool:
                samples = feed_samples(http)
                status = read(http, SYNC_STATUS, token)
                return (
                    samples.get("finance_feed_check_ok") == 1
                    and "health healthy" in samples
                    and status["webhook_health"] == "healthy"
                )

            wait_until(feed_fixed, timeout=30, every=0.2, what="healthy after the fix")
            assert "disabled" not in health_reason(engine)
    finally:
        listener.stop()
    # The worker asked Stripe more than once on its own: the schedule, not a test's call.
    assert len(stripe_api.pages_requested("webhook_endpoints")) >= 2
