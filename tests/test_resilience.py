"""Resilience: a crash mid-burst, a flood of garbage, reads during writes, and a big burst.

Sizes are chosen to run in a few minutes on two cores; `make bench` measures speed.
"""

import json
import os
import signal
import statistics
import threading
import time
from collections import Counter
from datetime import UTC, datetime

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from finance_core.feed.ingest import StripeEvent
from finance_core.feed.rejections import KEEP_LATEST_REJECTIONS
from finance_core.store import migrate
from finance_core.store.db import make_engine, read_transaction
from finance_core.store.models import (
    rejected_deliveries,
    webhook_events,
)
from finance_core.views.queries import stripe_sync_status, subscription_summary
from tests.support import stripe_factory as sf
from tests.support.bursts import (
    acknowledged_in,
    assert_same_as_a_clean_run,
    burst,
    codes,
    fingerprint,
    listener_and_writer,
    redeliver_the_unacknowledged,
    send_all,
)
from tests.support.servers import ListenerProcess, wait_gone


@pytest.mark.slow
def test_kill_9_mid_burst_then_redelivery_equals_a_clean_run(tmp_path):
    events = burst(3000, seed=1)
    url = f"sqlite:///{tmp_path}/crash.db"
    with listener_and_writer(url) as (listener, writer):
        first = codes(send_all(listener.url, events, stop_after_acks=1000, on_stop=listener.kill))
        acknowledged = acknowledged_in(first)
        assert 1000 <= len(acknowledged) < len(events)
        # The writer sees its listener's end of the socket close, and exits: no orphan.
        assert wait_gone(writer)

        listener.start()  # a restart on the same store
        redeliver_the_unacknowledged(listener.url, events, first, seed=2)
    assert_same_as_a_clean_run(tmp_path, url, events, acknowledged)


@pytest.mark.slow
def test_kill_9_of_the_writer_mid_burst_answers_503_then_a_new_writer_carries_on(tmp_path):
    """The listener outlives its writer: waiting deliveries get 503, later ones a new writer."""
    events = burst(3000, seed=5)
    url = f"sqlite:///{tmp_path}/writer-crash.db"
    with listener_and_writer(url) as (listener, writer):

        def kill_writer() -> None:
            os.kill(writer, signal.SIGKILL)

        answered = send_all(listener.url, events, stop_after_acks=1000, on_stop=kill_writer)
        first = codes(answered)
        acknowledged = acknowledged_in(first)
        assert set(first.values()) <= {200, 503, None}
        assert max(seconds for _, seconds in answered.values()) < 5  # none left hanging
        assert listener.process is not None and listener.process.poll() is None

        deadline = time.monotonic() + 30
        while listener.writer_pid() in (None, writer) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert listener.writer_pid() not in (None, writer)  # another writer took over
        assert httpx.get(f"{listener.url}/healthz").json()["writer"] == "running"
        redeliver_the_unacknowledged(listener.url, events, first, seed=6)
    assert_same_as_a_clean_run(tmp_path, url, events, acknowledged)


@pytest.mark.slow
def test_sigterm_to_the_process_group_mid_burst_answers_what_is_in_flight(tmp_path):
    """A service stop signals every process of the listener: deliveries already taken in are
    still stored and answered 200 (none 503), then both processes exit."""
    events = burst(3000, seed=7)
    url = f"sqlite:///{tmp_path}/sigterm.db"
    with listener_and_writer(url) as (listener, writer):
        first = codes(
            send_all(listener.url, events, stop_after_acks=1000, on_stop=listener.terminate_group)
        )
        assert set(first.values()) <= {200, None}, Counter(first.values())
        acknowledged = acknowledged_in(first)
        assert listener.process is not None
        # uvicorn shuts down gracefully, then ends by the signal it caught, as is customary.
        assert listener.process.wait(timeout=30) == -signal.SIGTERM
        assert wait_gone(writer)

        listener.start()
        redeliver_the_unacknowledged(listener.url, events, first, seed=8)
    assert_same_as_a_clean_run(tmp_path, url, events, acknowledged)


# --- fuzz ------------------------------------------------------------------------------

VALID = sf.event("customer.subscription.created", sf.subscription("sub_fz", "active", "prod_fz"))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=10,
)


@st.composite
def malformed_deliveries(draw) -> tuple[bytes, dict[str, str], bool]:
    """(body, headers, signed-over-this-body) for deliveries that are not verified events."""
    kind = draw(st.sampled_from(["bytes", "truncated", "mutated", "nonsense", "header"]))
    body = json.dumps(VALID).encode()
    if kind == "bytes":
        body = draw(st.binary(max_size=2000))
    elif kind == "truncated":
        body = body[: draw(st.integers(0, len(body) - 1))]
    elif kind == "mutated":
        position = draw(st.integers(0, len(body) - 1))
        body = body[:position] + draw(st.binary(min_size=1, max_size=8)) + body[position + 1 :]
    elif kind == "nonsense":
        envelope = dict(VALID)
        field = draw(st.sampled_from(["id", "type", "created", "data", "object"]))
        envelope[field] = draw(json_values.filter(lambda v: not isinstance(v, str)))
        body = json.dumps(envelope).encode()
    signed = draw(st.booleans()) and kind != "header"
    if signed:
        try:
            headers = {"Stripe-Signature": sf.signature_header(body.decode())}
        except UnicodeDecodeError:
            headers = {"Stripe-Signature": "t=1,v1=00"}
    else:
        # Printable ASCII without surrounding spaces: anything else the HTTP client itself refuses.
        odd = draw(
            st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=300).map(
                str.strip
            )
        )
        headers = {"Stripe-Signature": odd}
        if draw(st.booleans()):
            headers["X-Odd-" + "h" * draw(st.integers(1, 50))] = "v" * draw(st.integers(0, 4000))
    return body, headers, signed


@pytest.mark.slow
@settings(
    max_examples=1500,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(delivery=malformed_deliveries())
def test_fuzzed_deliveries_never_5xx_and_never_change_the_store(fuzz_target, delivery):
    http, engine = fuzz_target
    body, headers, signed = delivery
    before = fingerprint(engine)
    response = http.post("/webhooks/stripe", content=body, headers=headers)
    if signed and response.status_code in (200, 500):
        # A valid signature over something event-shaped is a verified event: only those
        # may be applied (200) or fail loudly (500).
        StripeEvent.from_payload(json.loads(body))
        return
    assert response.status_code in (400, 413), response.text
    assert response.json()["received"] is False
    assert fingerprint(engine) == before
    with read_transaction(engine) as conn:
        kept = conn.execute(select(func.count()).select_from(rejected_deliveries)).scalar_one()
    assert kept <= KEEP_LATEST_REJECTIONS


@pytest.fixture
def fuzz_target(tmp_path):
    """The listener on SQLite only: the fuzz targets the HTTP layer, not the database."""
    from tests.conftest import make_settings
    from tests.support.servers import ThreadedServer
    from webhook_listener.app import create_app

    url = f"sqlite:///{tmp_path}/fuzz.db"
    engine = make_engine(url)
    migrate.upgrade(engine)
    server = ThreadedServer(create_app(make_settings(url), engine)).start()
    with httpx.Client(base_url=server.url, timeout=30) as http:
        yield http, engine
    server.stop()
    engine.dispose()


# --- concurrency and load --------------------------------------------------------------


@pytest.mark.slow
def test_dashboard_reads_never_block_or_fail_a_burst_of_writes(http, engine):
    events = burst(1500, seed=3)
    stop = threading.Event()
    read_errors: list[BaseException] = []
    reads = 0

    def read_loop() -> None:
        nonlocal reads
        while not stop.is_set():
            try:
                with read_transaction(engine) as conn:
                    now = datetime.now(UTC)
                    subscription_summary(conn=conn, active_statuses=["active"], now=now)
                    stripe_sync_status(conn=conn, delayed_after=600, now=now)
                reads += 1
            except BaseException as exc:  # collected and asserted below
                read_errors.append(exc)

    readers = [threading.Thread(target=read_loop) for _ in range(3)]
    for reader in readers:
        reader.start()
    try:
        results = codes(send_all(str(http.base_url).rstrip("/"), events, workers=8))
    finally:
        stop.set()
        for reader in readers:
            reader.join()
    assert read_errors == []
    assert reads > 10
    assert set(results.values()) == {200}


@pytest.mark.slow
def test_a_burst_of_20000_events_loses_none_and_acks_them_well_under_a_second(tmp_path):
    events = burst(20_000, seed=4, subscriptions_n=5000)
    listener = ListenerProcess(f"sqlite:///{tmp_path}/load.db").start()
    try:
        results = send_all(listener.url, events, workers=16)
    finally:
        listener.stop()
    answers = [code for code, _ in results.values()]
    assert answers.count(200) == len(events), {c: answers.count(c) for c in set(answers)}
    # Under a second (SPEC 4) at the 99th percentile: the single slowest of 20,000 on a loaded
    # 2-core machine says more about the scheduler than about the listener.
    acks = sorted(seconds for _, seconds in results.values())
    p99 = acks[int(len(acks) * 0.99) - 1]
    assert p99 < 1.0, (statistics.median(acks), p99, acks[-1])
    engine = make_engine(f"sqlite:///{tmp_path}/load.db")
    with read_transaction(engine) as conn:
        processed = conn.execute(
            select(func.count())
            .select_from(webhook_events)
            .where(webhook_events.c.status == "processed")
        ).scalar_one()
    engine.dispose()
    assert processed == len(events)
