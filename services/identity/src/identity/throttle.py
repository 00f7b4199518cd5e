"""Login throttling: sliding windows of failed logins, per account and per client address.

In memory and per process: it slows down guessing without a database round trip.
Refused (throttled) attempts are not counted, so ``Retry-After`` stays truthful.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict, deque
from collections.abc import Callable

from .config import IdentitySettings


class SlidingWindow:
    """At most ``limit`` events per key within any ``window`` seconds."""

    def __init__(
        self,
        limit: int,
        window: float,
        clock: Callable[[], float],
        *,
        max_keys: int = 100_000,
    ) -> None:
        self.limit = limit
        self.window = window
        self.clock = clock
        self.max_keys = max_keys
        self._events: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float] | None:
        times = self._events.get(key)
        if times is None:
            return None
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._events[key]
            return None
        return times

    def retry_after(self, key: str) -> float | None:
        """Seconds until ``key`` may try again, or None when it may now."""
        with self._lock:
            now = self.clock()
            times = self._recent(key, now)
            if times is None or len(times) < self.limit:
                return None
            # the attempt that has to fall out of the window for one more to fit
            return times[len(times) - self.limit] + self.window - now

    def add(self, key: str) -> None:
        with self._lock:
            now = self.clock()
            times = self._recent(key, now)
            if times is None:
                times = self._events[key] = deque(maxlen=self.limit * 2)
            times.append(now)
            self._events.move_to_end(key)
            while len(self._events) > self.max_keys:
                # forget the least recently failing key rather than grow without bound
                self._events.popitem(last=False)

    def clear(self, key: str) -> None:
        with self._lock:
            self._events.pop(key, None)


class LoginThrottle:
    """The two windows a password grant passes through."""

    def __init__(self, per_account: SlidingWindow, per_address: SlidingWindow) -> None:
        self.per_account = per_account
        self.per_address = per_address

    @classmethod
    def from_settings(cls, settings: IdentitySettings, clock: Callable[[], float]) -> LoginThrottle:
        window = settings.throttle_window_seconds
        return cls(
            SlidingWindow(settings.throttle_account_failures, window, clock),
            SlidingWindow(settings.throttle_address_failures, window, clock),
        )

    def retry_after(self, account: str, address: str | None) -> int | None:
        """Whole seconds to wait (at least 1), or None when the attempt may proceed."""
        waits = [self.per_account.retry_after(account)]
        if address is not None:
            waits.append(self.per_address.retry_after(address))
        longest = max((w for w in waits if w is not None), default=None)
        return None if longest is None else max(1, math.ceil(longest))

    def record_failure(self, account: str, address: str | None) -> None:
        self.per_account.add(account)
        if address is not None:
            self.per_address.add(address)

    def record_success(self, account: str) -> None:
        self.per_account.clear(account)
