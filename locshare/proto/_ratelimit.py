"""Token buckets for abuse limits (sans-io: ``now`` is an argument).

Resource handling: :class:`KeyedLimiter` keeps one bucket per key (client address,
session id) and never more than ``max_keys`` of them: idle buckets are full and
carry no information, so they are dropped first; beyond that the least recently used
key goes.  An attacker cycling keys therefore costs bounded memory.
"""

from __future__ import annotations

import math
from collections.abc import Hashable


class TokenBucket:
    """``capacity`` events at once, refilled at ``rate_per_s``."""

    __slots__ = ("capacity", "rate_per_s", "tokens", "updated")

    def __init__(self, rate_per_s: float, capacity: float, now: float) -> None:
        self.rate_per_s = rate_per_s
        self.capacity = capacity
        self.tokens = capacity
        self.updated = now

    def refill(self, now: float) -> None:
        elapsed = now - self.updated
        if elapsed > 0:
            self.tokens = min(self.capacity, self.tokens + elapsed * self.rate_per_s)
            self.updated = now

    def take(self, now: float, cost: float = 1.0) -> bool:
        """Spend ``cost`` tokens if available."""
        self.refill(now)
        if self.tokens >= cost:
            self.tokens -= cost
            return True
        return False

    def wait_s(self, now: float, cost: float = 1.0) -> float:
        """Seconds until ``cost`` tokens are available (0 if they are now)."""
        self.refill(now)
        return max(0.0, (cost - self.tokens) / self.rate_per_s)

    def is_full(self, now: float) -> bool:
        self.refill(now)
        return self.tokens >= self.capacity


class KeyedLimiter:
    """At most ``limit`` events per ``window_s`` per key (burst up to ``limit``)."""

    def __init__(self, limit: int, window_s: float, *, max_keys: int = 100_000) -> None:
        self.limit = limit
        self.window_s = window_s
        self.max_keys = max_keys
        self._buckets: dict[Hashable, TokenBucket] = {}
        self.refused = 0

    def hit(self, key: Hashable, now: float) -> bool:
        bucket = self._buckets.pop(key, None)
        if bucket is None:
            if len(self._buckets) >= self.max_keys:
                self._prune(now)
            bucket = TokenBucket(self.limit / self.window_s, self.limit, now)
        self._buckets[key] = bucket  # re-insert: dict order is recency order
        allowed = bucket.take(now)
        if not allowed:
            self.refused += 1
        return allowed

    def retry_after_s(self, key: Hashable, now: float) -> int:
        """Whole seconds until ``key`` is admitted again (at least 1): a Retry-After."""
        bucket = self._buckets.get(key)
        wait = 0.0 if bucket is None else bucket.wait_s(now)
        return max(1, math.ceil(wait))

    def _prune(self, now: float) -> None:
        for key in [k for k, b in self._buckets.items() if b.is_full(now)]:
            del self._buckets[key]
        while len(self._buckets) >= self.max_keys:
            del self._buckets[next(iter(self._buckets))]

    def __len__(self) -> int:
        return len(self._buckets)
