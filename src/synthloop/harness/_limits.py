"""Requests-per-minute and tokens-per-minute limits as asyncio token buckets."""

from __future__ import annotations

import asyncio
import time


class RateLimiter:
    """A token bucket refilled at `per_minute / 60` tokens a second.

    The bucket holds at most `burst` tokens (default: one second's worth, at least 1), so a
    limit spreads requests evenly instead of letting a minute's worth through at once.
    `acquire(n)` waits until the bucket can cover `n` (or a full bucket, for requests larger
    than the burst) and takes `n`, possibly leaving a debt that later callers wait out;
    `adjust(delta)` corrects an estimate afterwards (e.g. actual tokens minus estimated ones).
    Waiters are served first come, first served.
    """

    def __init__(self, per_minute: float, *, burst: float | None = None) -> None:
        if per_minute <= 0:
            raise ValueError("per_minute must be positive")
        self.per_second = per_minute / 60.0
        self.capacity = burst if burst is not None else max(1.0, self.per_second)
        self.tokens = self.capacity
        self._updated = time.monotonic()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self._updated) * self.per_second)
        self._updated = now

    async def acquire(self, n: float = 1.0) -> None:
        need = min(n, self.capacity)
        async with self._lock:
            while True:
                self._refill()
                if self.tokens >= need:
                    self.tokens -= n
                    return
                await asyncio.sleep((need - self.tokens) / self.per_second)

    def adjust(self, delta: float) -> None:
        """Take `delta` more tokens (or give back, when negative) after the fact."""
        self._refill()
        self.tokens = min(self.capacity, self.tokens - delta)
