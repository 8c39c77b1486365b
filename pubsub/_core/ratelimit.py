"""Token buckets for publish rate limits (v1.2 ``RATE_LIMIT``, ``REST_RATE_LIMIT``)."""

from __future__ import annotations

import math
import time


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` held; it starts full.

    :meth:`take` spends one token if there is one; otherwise it says how long
    until there will be. Time is ``time.monotonic()`` unless given (tests).
    """

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float, now: float | None = None) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a bucket needs rate > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = time.monotonic() if now is None else now

    def take(self, now: float | None = None) -> int:
        """Spend a token: 0 when there was one, else the milliseconds (at least 1)
        until one is due."""
        if now is None:
            now = time.monotonic()
        tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if tokens >= 1:
            self.tokens = tokens - 1
            return 0
        self.tokens = tokens
        return max(1, math.ceil((1 - tokens) / self.rate * 1000))

    def full(self, now: float) -> bool:
        """Whether the bucket has refilled (forgetting it loses nothing)."""
        return self.tokens + (now - self.stamp) * self.rate >= self.burst
