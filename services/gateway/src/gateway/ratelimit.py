"""Token buckets, one per key (a caller's subject or a client address).

A bucket holds up to ``burst`` tokens and refills at ``rate`` tokens a second; a
request takes one. Buckets live in this process (the edge runs them on its event
loop, so no lock is needed); with several gateway processes each limits its
share. Idle buckets are evicted oldest first, so memory stays bounded.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Verdict:
    """Whether a request may pass, and if not, when to retry."""

    allowed: bool
    retry_after: int = 0
    #: The first refusal since the key last passed: the one worth recording.
    first_refusal: bool = False


class _Bucket:
    __slots__ = ("tokens", "updated", "throttled")

    def __init__(self, tokens: float, now: float) -> None:
        self.tokens = tokens
        self.updated = now
        self.throttled = False


class RateLimiter:
    """Token buckets keyed by a string."""

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a rate limit needs a positive rate and a burst of at least 1")
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self.clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def check(self, key: str) -> Verdict:
        """Take a token for ``key`` if one is left."""
        now = self.clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = _Bucket(float(self.burst), now)
            self._buckets[key] = bucket
            if len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            elapsed = max(0.0, now - bucket.updated)
            bucket.tokens = min(float(self.burst), bucket.tokens + elapsed * self.rate)
            bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            bucket.throttled = False
            return Verdict(True)
        wait = (1.0 - bucket.tokens) / self.rate
        first = not bucket.throttled
        bucket.throttled = True
        return Verdict(False, retry_after=max(1, math.ceil(wait)), first_refusal=first)

    def __len__(self) -> int:
        return len(self._buckets)
