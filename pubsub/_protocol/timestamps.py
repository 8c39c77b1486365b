"""Timestamps of the contract: ISO-8601 UTC with milliseconds and ``Z``."""

from __future__ import annotations

import time

_ts_second = -1
_ts_prefix = ""


def now_ms() -> int:
    """Wall-clock time in integer milliseconds since the epoch."""
    return time.time_ns() // 1_000_000


def format_ts(epoch_ms: int) -> str:
    """Format epoch milliseconds as ``2026-11-28T10:00:00.123Z``.

    The formatted second is cached: under load many messages share a second,
    and strftime is the expensive part.
    """
    global _ts_second, _ts_prefix
    second, millis = divmod(epoch_ms, 1000)
    if second != _ts_second:
        _ts_prefix = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(second))
        _ts_second = second
    return f"{_ts_prefix}{millis:03d}Z"


def ts_now() -> str:
    """The current time as a contract timestamp."""
    return format_ts(now_ms())
