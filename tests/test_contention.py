"""Several listeners' writers on one PostgreSQL never deadlock (SPEC 20): three listeners, as
deploy/finance-listener@.service starts them, take one concurrent burst that moves subscriptions
between shared plans and statuses; PostgreSQL counts no deadlock, no batch is applied again one
delivery at a time, the events, subscriptions, invoices and counts equal a single writer's run
of the same events in order, and the daily history adds up to the counts and to a recount."""

import os
import shutil
import tempfile
import threading
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from finance_core.store.db import make_engine, read_transaction
from tests.support.bursts import burst, clean_store, codes, fingerprint, send_all
from tests.support.cluster import start_listener_units
from tests.support.postgres import PostgresServer, deadlocks
from tests.support.reads import cumulative_history, maintained_and_recounted
from tests.support.stripe_factory import SECRET

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

LISTENERS = 3
# The retry path a deadlock victim's batch takes (finance_core.feed.ingest.ingest_batch).
APPLIED_ONE_BY_ONE = "applying them one by one"


def test_three_listeners_on_one_postgresql_never_deadlock(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    # 600 subscriptions moving between 8 plans and 5 statuses: every batch touches many of the
    # same count and history rows, in the order its deliveries happened to arrive.
    events = burst(6000, seed=41, subscriptions_n=300)
    url = postgres_server.create_database("contention")
    env = {"DATABASE_URL": url, "STRIPE_WEBHOOK_SECRET": SECRET}
    workdir = Path(tempfile.mkdtemp(prefix="pmf-contention-"))
    answers: dict[str, Any] = {}
    try:
        with ExitStack() as stack:
            listeners = start_listener_units(LISTENERS, {**os.environ, **env}, workdir, stack)

            def send(n: int) -> None:
                answers.update(send_all(listeners[n].url, events[n::LISTENERS], workers=16))

            senders = [threading.Thread(target=send, args=(n,)) for n in range(LISTENERS)]
            for sender in senders:
                sender.start()
            for sender in senders:
                sender.join()
        # The listeners are stopped: their sessions' statistics are flushed.
        logs = "".join(path.read_text() for path in workdir.glob("listener*.log"))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    assert set(codes(answers).values()) == {200}
    assert APPLIED_ONE_BY_ONE not in logs

    store = make_engine(url)
    clean = clean_store(tmp_path, events)
    try:
        with store.connect() as conn:
            assert deadlocks(conn) == 0
        assert fingerprint(store) == fingerprint(clean)
        with read_transaction(store) as conn:
            maintained, recount = maintained_and_recounted(conn)
            assert cumulative_history(conn) == maintained == recount
    finally:
        store.dispose()
        clean.dispose()
