"""Subscription statuses in the finance team's words: what "active" is made of, why paused."""

from collections.abc import Mapping, Sequence

# Why Stripe paused a subscription (status_details.paused.subscription.type), in words.
PAUSE_REASONS = {
    "first_payment_failure": "first payment failed",
    "final_payment_failure": "final payment failed",
    "pause_requested": "pause requested",
    "trial_end_without_payment_method": "trial ended without a payment method",
    "system": "paused by Stripe",
    "unspecified": "no reason given",
}


def status_words(status: str) -> str:
    """A Stripe status as words: "past_due" is "past due"."""
    return status.replace("_", " ")


def active_made_of(breakdown: Mapping[str, int], active_statuses: Sequence[str]) -> str:
    """What the active subscriptions are made of: "178 active, 30 trialing, 28 past due".

    One part per status of ACTIVE_SUBSCRIPTION_STATUSES, in their configured order, zeros
    included so that the reader sees which statuses count.
    """
    return ", ".join(
        f"{breakdown.get(status, 0):,} {status_words(status)}" for status in active_statuses
    )


def with_pause_reasons(breakdown: Mapping[str, int], paused: Mapping[str, int]) -> dict[str, int]:
    """The status breakdown with `paused` split by pause reason ("paused: final payment failed").

    The two counts may be read a moment apart: paused subscriptions the reasons miss count as
    "no reason given". The largest count first.
    """
    if "paused" not in breakdown:
        return dict(breakdown)
    split: dict[str, int] = {}
    for status, count in breakdown.items():
        if status != "paused":
            split[status] = count
            continue
        for reason, reason_count in paused.items():
            label = f"paused: {PAUSE_REASONS.get(reason, status_words(reason))}"
            split[label] = split.get(label, 0) + reason_count
        rest = count - sum(paused.values())
        if rest > 0:  # a subscription paused between the two reads
            label = "paused: " + PAUSE_REASONS["unspecified"]
            split[label] = split.get(label, 0) + rest
    return dict(sorted(split.items(), key=lambda item: -item[1]))
