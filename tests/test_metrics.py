"""GET /metrics: every metric through prometheus_client's parser, equal to the Finance API's
numbers; the optional bearer; and a real Prometheus scraping the listener with deploy/'s files."""

import shutil
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from finance_core.store.db import read_transaction
from finance_core.views.queries import stripe_sync_status
from tests.conftest import deliver, make_settings, skip_or_fail
from tests.support import stripe_factory as sf
from tests.support.alerts import listener_env, start, stop
from tests.support.api import SUMMARY, SYNC_STATUS, make_token, parse_utc, read
from tests.support.postgres import free_port
from tests.support.servers import ThreadedServer, wait_for_rounds
from tests.support.waiting import wait_until
from webhook_listener.app import create_app
from webhook_listener.metrics import ACK_BUCKETS

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
METRICS_TOKEN = "metrics-token-test-6a1f0c"
STORE_GAUGES = [
    "finance_webhook_health",
    "finance_webhook_last_received_timestamp_seconds",
    "finance_active_subscriptions",
    "finance_failed_payments",
    "finance_unresolved_failed_events",
    "finance_thin_events_pending",
]
COUNTERS = ["finance_webhook_deliveries", "finance_webhook_rejections"]


def scrape(http: httpx.Client, **headers: str) -> dict[str, dict[tuple, float]]:
    """Each sample's value by name and labels, as Prometheus's own parser reads /metrics."""
    response = http.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            labels = tuple(sorted(sample.labels.items()))
            samples.setdefault(sample.name, {})[labels] = sample.value
    return samples


def value(samples, name, **labels):
    return samples[name][tuple(sorted(labels.items()))]


@pytest.fixture
def listener_without_jobs(settings, engine):
    server = ThreadedServer(create_app(settings, engine, jobs=[])).start()
    yield server
    server.stop()


def test_metrics_name_every_number_and_equal_the_api(engine, listener_without_jobs):
    token = make_token(engine, "finance")
    with httpx.Client(base_url=listener_without_jobs.url, timeout=30) as http:
        for n, status in enumerate(["active", "active", "trialing", "canceled"]):
            subscription = sf.subscription(f"sub_m{n}", status, "prod_metrics")
            assert deliver(http, sf.event("customer.subscription.created", subscription)).is_success
        failing = sf.event("invoice.payment_failed", sf.invoice("in_m1", "open"))
        assert deliver(http, failing).json()["outcome"] == "processed"
        assert deliver(http, failing).json()["outcome"] == "duplicate"
        ignored = sf.event("customer.created", {"id": "cus_m", "object": "customer"})
        assert deliver(http, ignored).json()["outcome"] == "ignored"
        broken = sf.subscription("sub_broken", "active", "prod_metrics")
        del broken["status"]
        assert deliver(http, sf.event("customer.subscription.updated", broken)).status_code == 500
        for _ in range(2):
            wrong = deliver(http, sf.event("product.created", {}), secret="whsec_not_ours_0123")
            assert wrong.json()["error"] == "bad_signature"
        assert http.post("/webhooks/stripe", content=b"{}").json()["error"] == "missing_signature"
        thin = sf.thin_event("v1.invoice.paid", "invoice", "in_m1")
        assert deliver(http, thin).json()["outcome"] == "queued"

        samples = scrape(http)
        summary, status = read(http, SUMMARY, token), read(http, SYNC_STATUS, token)

    for name in STORE_GAUGES:
        assert name in samples, name
    for name in COUNTERS:
        assert f"{name}_total" in samples, name
    assert value(samples, "finance_active_subscriptions") == summary["active_subscriptions"] == 3
    assert value(samples, "finance_failed_payments") == status["failed_payments_count"] == 1
    health = {labels[0][1]: v for labels, v in samples["finance_webhook_health"].items()}
    assert health == {"healthy": 0, "delayed": 0, "error": 1}
    assert status["webhook_health"] == "error"
    received = value(samples, "finance_webhook_last_received_timestamp_seconds")
    assert int(received) == parse_utc(status["last_webhook_received"]).timestamp()
    with read_transaction(engine) as conn:
        stored = stripe_sync_status(conn=conn, delayed_after=600, now=datetime.now(UTC))
    assert value(samples, "finance_unresolved_failed_events") == stored.unresolved_failed_events
    assert stored.unresolved_failed_events == 1
    assert value(samples, "finance_thin_events_pending") == stored.thin_events_pending == 1

    outcomes = {
        labels[0][1]: v for labels, v in samples["finance_webhook_deliveries_total"].items()
    }
    assert outcomes == {"processed": 5, "duplicate": 1, "ignored": 1, "failed": 1, "queued": 1}
    rejections = {
        labels[0][1]: v for labels, v in samples["finance_webhook_rejections_total"].items()
    }
    assert rejections == {"bad_signature": 2, "missing_signature": 1}
    answered = sum(outcomes.values()) + sum(rejections.values())
    assert value(samples, "finance_webhook_ack_seconds_count") == answered
    assert value(samples, "finance_webhook_ack_seconds_bucket", le="+Inf") == answered
    assert 0 < value(samples, "finance_webhook_ack_seconds_sum") < answered
    # The documented buckets, 1 ms to 5 s, each counting the acks at most that long.
    buckets = {
        float(dict(labels)["le"]): count
        for labels, count in samples["finance_webhook_ack_seconds_bucket"].items()
    }
    assert sorted(buckets) == [*ACK_BUCKETS, float("inf")]
    assert ACK_BUCKETS[0] == 0.001 and ACK_BUCKETS[-1] == 5.0
    counts = [buckets[bound] for bound in sorted(buckets)]
    assert counts == sorted(counts)


def test_store_gauges_are_read_at_most_every_few_seconds(engine, listener_without_jobs):
    """A scrape storm costs one store read per few seconds; counters are always current."""
    with httpx.Client(base_url=listener_without_jobs.url, timeout=30) as http:
        first = scrape(http)
        event = sf.event("customer.subscription.created", sf.subscription("sub_c", "active", "p"))
        assert deliver(http, event).is_success
        second = scrape(http)
    assert value(first, "finance_active_subscriptions") == 0
    assert value(second, "finance_active_subscriptions") == 0  # cached
    assert value(second, "finance_webhook_deliveries_total", outcome="processed") == 1


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_metrics_token_is_required_as_a_bearer_when_set(engine, database_url):
    settings = make_settings(database_url, metrics_token=METRICS_TOKEN)
    server = ThreadedServer(create_app(settings, engine, jobs=[])).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            for headers in (
                {},
                {"Authorization": "Bearer not-the-token"},
                {"Authorization": f"Basic {METRICS_TOKEN}"},
                {"Authorization": f"Bearer {METRICS_TOKEN}x"},
            ):
                refused = http.get("/metrics", headers=headers)
                assert refused.status_code == 401
                assert refused.headers["www-authenticate"] == "Bearer"
                assert "finance_" not in refused.text
            samples = scrape(http, Authorization=f"Bearer {METRICS_TOKEN}")
            assert "finance_webhook_health" in samples
            assert "/metrics" not in http.get("/openapi.json").json()["paths"]
    finally:
        server.stop()


@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_each_background_job_reports_its_rounds(database_url, engine):
    """The worker process's rounds reach the listener's /metrics: a stalled job would show."""
    env = listener_env(database_url, METRICS_TOKEN=METRICS_TOKEN, DIGEST_AT="07:00 UTC")
    processes, (url,) = start(env)
    try:
        wait_for_rounds([url], "alerts", 2, METRICS_TOKEN)  # ALERT_CHECK_SECONDS=1
        wait_for_rounds([url], "digest", 2, METRICS_TOKEN)
        wait_for_rounds([url], "resolver", 2, METRICS_TOKEN)
        with httpx.Client(base_url=url, timeout=30) as http:
            samples = scrape(http, Authorization=f"Bearer {METRICS_TOKEN}")
        now = time.time()
        for job in ("alerts", "digest", "resolver", "housekeeping"):
            last = value(
                samples, "finance_background_last_round_timestamp_seconds", background_job=job
            )
            assert now - 60 < last <= now + 1, job  # housekeeping's one round: at start
            assert value(samples, "finance_background_rounds_total", background_job=job) >= 1
        # Off without STRIPE_ENDPOINT_URL: no round, so nothing that would look stalled.
        reported = samples["finance_background_last_round_timestamp_seconds"]
        assert (("background_job", "feed_check"),) not in reported
    finally:
        output = stop(processes)
    assert "Traceback" not in output


def _prometheus_files(workdir: Path, target: str) -> Path:
    """deploy/prometheus.yml and its rules, pointed at `target` with a token file, in workdir."""
    token_file = workdir / "metrics-token"
    token_file.write_text(METRICS_TOKEN)
    config = (DEPLOY / "prometheus.yml").read_text()
    for placeholder, actual in [
        ("/etc/prometheus/penguinmails-finance-metrics-token", str(token_file)),
        ("- listener-1.internal:8000\n          - listener-2.internal:8000", f"- {target}"),
        ("scrape_interval: 15s", "scrape_interval: 1s"),
    ]:
        assert placeholder in config, placeholder
        config = config.replace(placeholder, actual)
    path = workdir / "prometheus.yml"
    path.write_text(config)
    shutil.copy(DEPLOY / "alert-rules.yml", workdir / "alert-rules.yml")
    return path


@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_real_prometheus_scrapes_the_listener_with_the_deploy_config(
    engine, database_url, tmp_path
):
    if shutil.which("prometheus") is None or shutil.which("promtool") is None:
        skip_or_fail("no Prometheus (apt-get install prometheus)")
    settings = make_settings(database_url, metrics_token=METRICS_TOKEN)
    server = ThreadedServer(create_app(settings, engine, jobs=[])).start()
    port = free_port()
    prometheus = None
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            event = sf.event("product.created", sf.product("prod_p", "P"))
            assert deliver(http, event).is_success  # health: healthy
        config = _prometheus_files(tmp_path, f"127.0.0.1:{server.port}")
        checked = subprocess.run(
            ["promtool", "check", "config", str(config)], capture_output=True, text=True
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert "SUCCESS: 4 rules found" in checked.stdout
        prometheus = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        query = 'finance_webhook_health{state="healthy"}'

        def scraped() -> list:
            assert prometheus.poll() is None, prometheus.stderr.read() if prometheus.stderr else ""
            response = httpx.get(
                f"http://127.0.0.1:{port}/api/v1/query", params={"query": query}, timeout=5
            )
            if response.status_code != 200:  # starting: "Service Unavailable" in plain text
                return []
            return response.json()["data"]["result"]

        found = wait_until(
            scraped,
            timeout=90,
            every=0.5,
            what="Prometheus's first scrape of the listener",
            ignoring=(httpx.TransportError,),
        )
        assert [sample["value"][1] for sample in found] == ["1"]
        assert found[0]["metric"]["job"] == "penguinmails-finance"
    finally:
        if prometheus is not None:
            prometheus.terminate()
            prometheus.communicate(timeout=30)
        server.stop()
