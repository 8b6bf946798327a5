"""Exponential backoff with jitter, for retrying Stripe's 429s and alert channels that fail."""

import random
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Backoff:
    """Waits that double from `first_delay` up to `max_delay`, each jittered (as Stripe recommends
    for 429s), or what a Retry-After says."""

    first_delay: float = 1.0
    max_delay: float = 32.0
    max_waits_in_a_row: int = 8
    sleep: Callable[[float], None] = time.sleep

    def delay(self, waits_in_a_row: int, retry_after: str | None) -> float:
        if retry_after and retry_after.isdigit():
            return min(float(retry_after), self.max_delay)
        ceiling = min(self.max_delay, self.first_delay * 2 ** (waits_in_a_row - 1))
        return ceiling * random.uniform(0.5, 1.0)
