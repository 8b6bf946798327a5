"""Shares of a whole that add up to exactly 100%: largest-remainder rounding."""

from collections.abc import Sequence
from fractions import Fraction


def percent_shares(counts: Sequence[int], *, decimals: int = 0) -> list[float]:
    """Each count's share of their sum in percent, rounded to `decimals` so that they sum to 100.

    Largest remainder (Hamilton's method): every share is first rounded down, then the units
    still missing go one each to the shares that lost the most in rounding (ties to the earlier
    count). Each share is thus within one unit of its exact value. All zeros: all 0.
    """
    if any(count < 0 for count in counts):
        raise ValueError("counts are never negative")
    total = sum(counts)
    if total == 0:
        return [0.0] * len(counts)
    units = 100 * 10**decimals
    exact = [Fraction(count * units, total) for count in counts]
    floors = [int(share) for share in exact]
    missing = units - sum(floors)
    by_remainder = sorted(range(len(counts)), key=lambda n: (-(exact[n] - floors[n]), n))
    for n in by_remainder[:missing]:
        floors[n] += 1
    return [floor / 10**decimals for floor in floors]
