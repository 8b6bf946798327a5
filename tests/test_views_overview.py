"""The Overview's rules, UI-free: shares, what "active" is made of, pauses, changes, notices."""

from datetime import UTC, datetime, timedelta
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from finance_core.alerts.samples import FAILED_PAYMENTS_DAILY_MEASURE, day_close, record_day_figure
from finance_core.feed.sync import SyncRun
from finance_core.store.db import read_transaction
from finance_core.views.changes import Changes, failed_payment_changes
from finance_core.views.event_log import EventRow, generation_failure_unsynced
from finance_core.views.shares import percent_shares
from finance_core.views.statuses import active_made_of, with_pause_reasons

NOW = datetime(2026, 12, 4, 15, 30, tzinfo=UTC)

# --- shares --------------------------------------------------------------------------------

counts = st.lists(st.integers(min_value=0, max_value=10**9), min_size=1, max_size=40)


@given(counts, st.sampled_from([0, 1, 2]))
def test_shares_add_up_to_exactly_100_and_each_is_within_one_unit_of_its_exact_share(
    values, decimals
):
    shares = percent_shares(values, decimals=decimals)
    unit = Fraction(1, 10**decimals)
    in_units = [round(Fraction(share).limit_denominator(10**decimals) / unit) for share in shares]
    total = sum(values)
    if total == 0:
        assert in_units == [0] * len(values)
        return
    assert sum(in_units) == 100 * 10**decimals
    for value, share in zip(values, in_units, strict=True):
        exact = Fraction(100 * value, total) / unit
        assert abs(share - exact) < 1


def test_shares_go_to_the_largest_remainders_first():
    # 1/3 each: 33.33.. thrice; the one unit left goes to the first of the tied.
    assert percent_shares([1, 1, 1]) == [34.0, 33.0, 33.0]
    # 66.66.. and 33.33..: the larger remainder (.66) rounds up.
    assert percent_shares([2, 1]) == [67.0, 33.0]
    assert percent_shares([1, 1, 1], decimals=1) == [33.4, 33.3, 33.3]


def test_a_negative_count_is_refused():
    with pytest.raises(ValueError):
        percent_shares([3, -1])


# --- statuses ------------------------------------------------------------------------------


def test_active_is_described_by_its_statuses_in_the_configured_order():
    breakdown = {"canceled": 40, "active": 1178, "past_due": 28, "trialing": 30}
    assert (
        active_made_of(breakdown, ("active", "trialing", "past_due"))
        == "1,178 active, 30 trialing, 28 past due"
    )
    # A status counted as active but with no subscription is still named, with 0.
    assert active_made_of({"active": 3}, ("active", "trialing")) == "3 active, 0 trialing"


def test_paused_is_split_by_reason_and_a_paused_one_without_reason_is_not_lost():
    breakdown = {"active": 5, "paused": 4, "canceled": 1}
    paused = {"first_payment_failure": 2, "new_stripe_reason": 1}
    assert with_pause_reasons(breakdown, paused) == {
        "active": 5,
        "paused: first payment failed": 2,
        "paused: new stripe reason": 1,
        "paused: no reason given": 1,  # paused between the two reads
        "canceled": 1,
    }
    assert with_pause_reasons({"active": 2}, {}) == {"active": 2}


# --- the notice of events Stripe failed to generate ----------------------------------------


def _failure(received_at):
    return EventRow(
        id="evt_gen",
        type="v1.event_generation_failure.resolved",
        status="processed",
        created=received_at,
        first_received_at=received_at,
        last_received_at=received_at,
        attempts=1,
        deliveries=1,
        livemode=False,
        error=None,
    )


def _run(status, started_at):
    return SyncRun(1, started_at, started_at, status, "ada", None, None)


def test_a_generation_failure_asks_for_a_sync_until_one_succeeds_after_it():
    failure = _failure(NOW)
    assert not generation_failure_unsynced(failure=None, last_sync=None)
    assert generation_failure_unsynced(failure=failure, last_sync=None)
    before = _run("succeeded", NOW - timedelta(minutes=1))
    assert generation_failure_unsynced(failure=failure, last_sync=before)
    failed_after = _run("failed", NOW + timedelta(minutes=1))
    assert generation_failure_unsynced(failure=failure, last_sync=failed_after)
    after = _run("succeeded", NOW + timedelta(minutes=1))
    assert not generation_failure_unsynced(failure=failure, last_sync=after)


# --- failed payments kept per day ----------------------------------------------------------


def test_the_day_figure_keeps_the_days_latest_count_and_carries_it_over_quiet_days(engine):
    measure = FAILED_PAYMENTS_DAILY_MEASURE
    nine_days_ago = NOW - timedelta(days=9)
    record_day_figure(engine=engine, measure=measure, value=4, now=nine_days_ago)
    for hours, value in [(3, 6), (2, 6), (1, 5)]:  # yesterday, in order: the last is its close
        record_day_figure(
            engine=engine, measure=measure, value=value, now=NOW - timedelta(days=1, hours=hours)
        )
    with read_transaction(engine) as conn:
        assert day_close(conn=conn, measure=measure, day=(NOW - timedelta(days=10)).date()) is None
        assert day_close(conn=conn, measure=measure, day=nine_days_ago.date()) == 4
        changes = failed_payment_changes(conn=conn, failed_now=3, now=NOW)
    # A week ago nothing was kept: the 4 of 9 days ago still held at that day's end.
    assert changes == Changes(since_yesterday=3 - 5, since_last_week=3 - 4)
