"""Finance API rate limits on the `limits` library: per token, and per address for failed logins.

A moving window counts exactly the requests of the last period; with `redis://...` storage every
listener process shares the same windows.
"""

import logging
import math
import time
from dataclasses import dataclass
from typing import cast

import redis
from limits import RateLimitItem, parse
from limits.storage import RedisStorage, Storage, storage_from_string
from limits.strategies import MovingWindowRateLimiter

from finance_core.settings import Settings

log = logging.getLogger("webhook_listener.ratelimit")

# Failed authentications (401s) allowed per client address: enough for a misconfigured script to
# show its error, too few for a flood to keep the token lookup busy.
FAILED_AUTH_LIMIT_PER_ADDRESS = "20/minute"


@dataclass(frozen=True, slots=True)
class Decision:
    """One request counted against one limit."""

    allowed: bool
    limit: int
    remaining: int
    retry_after: int

    def headers(self) -> dict[str, str]:
        """The X-RateLimit-* headers of an authenticated answer."""
        return {"X-RateLimit-Limit": str(self.limit), "X-RateLimit-Remaining": str(self.remaining)}


class RateLimits:
    """The Finance API's two limits over one storage, created when the app starts."""

    def __init__(self, storage_uri: str, per_token: str) -> None:
        # Wrapped, a storage failure (Redis down) is a StorageError whatever the backend.
        self.storage: Storage = storage_from_string(  # type: ignore[assignment]
            storage_uri, wrap_exceptions=True
        )
        self.limiter = MovingWindowRateLimiter(self.storage)
        self.per_token = parse(per_token)
        self.failed_auth_per_address = parse(FAILED_AUTH_LIMIT_PER_ADDRESS)

    @classmethod
    def from_settings(cls, settings: Settings) -> "RateLimits":
        limits = cls(settings.rate_limit_storage_uri, settings.finance_api_rate_limit)
        if not limits.storage.check():
            # Not fatal: the store may come up after us; until then API calls answer 503.
            log.error("the rate limit storage is not reachable yet")
        return limits

    def hit_token(self, token_id: str) -> Decision:
        """Count one request of this token."""
        return self._hit(self.per_token, "finance-api-token", token_id)

    def hit_failed_auth(self, address: str) -> Decision:
        """Count one failed authentication from this client address."""
        return self._hit(self.failed_auth_per_address, "finance-api-failed-auth", address)

    def close(self) -> None:
        """Release the storage's connections."""
        if isinstance(self.storage, RedisStorage):
            # limits types its client as the few commands it uses; it is a redis.Redis.
            cast(redis.Redis, self.storage.get_connection()).close()

    def _hit(self, item: RateLimitItem, *identifiers: str) -> Decision:
        allowed = self.limiter.hit(item, *identifiers)
        reset_at, remaining = self.limiter.get_window_stats(item, *identifiers)
        # The moving window frees its oldest slot at reset_at; never tell a client to retry at 0.
        retry_after = max(1, math.ceil(reset_at - time.time()))
        return Decision(allowed, item.amount, max(0, remaining), retry_after)
