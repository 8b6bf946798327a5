"""The dashboard's cached reads: one helper makes them, and a write clears every one of them."""

import time

from streamlit.runtime.caching.cache_type import CacheType
from streamlit.runtime.caching.cache_utils import CachedFunc

from dashboard import data
from tests.support import apptest
from tests.support import stripe_factory as sf
from tests.support.apptest import feed

dashboard = apptest.dashboard  # the fixture: the test store, its users, no cache left over


def test_every_cached_read_is_made_by_cached_read_so_that_a_write_clears_it():
    # A read cached by hand (`st.cache_data` on a module function) would be left out of
    # forget_cached_reads and show stale numbers after a replay: decorate it @cached_read.
    by_hand = [
        name
        for name, value in vars(data).items()
        if isinstance(value, CachedFunc)
        and value._info.cache_type is CacheType.DATA  # cache_resource holds engines, not reads
        and value not in data._CACHED_READS
    ]
    assert by_hand == []
    assert len(data._CACHED_READS) >= 15


def test_a_write_clears_every_cached_read_at_once(dashboard):
    reads = {
        "status_breakdown": data.status_breakdown,
        "summary": lambda: data.subscription_summary().active_subscriptions,
        "event_types": data.event_types,
        "failed_events": lambda: [row.id for row in data.failed_events()],
        "active_changes": data.active_subscription_changes,
    }
    before = {name: read() for name, read in reads.items()}
    started_today = sf.subscription("sub_1", "active", "prod")
    started_today["start_date"] = int(time.time())  # the history is dated by Stripe's start
    feed(dashboard, "customer.subscription.created", started_today)
    broken = sf.subscription("sub_2", "active", "prod")
    del broken["status"]
    feed(dashboard, "customer.subscription.updated", broken, event_id="evt_broken")

    # Cached: the same answers until a write through the dashboard clears them.
    assert {name: read() for name, read in reads.items()} == before
    data.forget_cached_reads()
    after = {name: read() for name, read in reads.items()}
    assert after == {
        "status_breakdown": {"active": 1},
        "summary": 1,
        "event_types": ["customer.subscription.created", "customer.subscription.updated"],
        "failed_events": ["evt_broken"],
        "active_changes": data.changes.Changes(since_yesterday=1, since_last_week=1),
    }


def test_two_reads_with_the_same_arguments_keep_their_own_answers(dashboard):
    # Streamlit keys a cache by the function's name and source: cached_read makes every
    # read from one inner function, so each must carry its own name or they would share.
    feed(dashboard, "customer.subscription.created", sf.subscription("sub_1", "active", "prod"))
    assert data.status_breakdown() == {"active": 1}
    assert data.paused_by_reason() == {}
    assert data.event_types() == ["customer.subscription.created"]
