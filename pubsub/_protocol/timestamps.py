"""Timestamps of the contract: ISO-8601 UTC with milliseconds and ``Z``."""

from __future__ import annotations

import time
from typing import Final

#: The longest message TTL in ms (100 years): an expiry must stay a date that
#: ISO 8601 and the platform's ``gmtime`` can write (a TTL of 8e20 ms made the
#: event frame, and every later read of the topic, fail with 500).
MAX_TTL_MS: Final = 100 * 365 * 24 * 3600 * 1000

_ts_second = -1
_ts_prefix = ""
_ts_last_ms = -1
_ts_last = ""


def now_ms() -> int:
    """Wall-clock time in integer milliseconds since the epoch."""
    return time.time_ns() // 1_000_000


def format_ts(epoch_ms: int) -> str:
    """Format epoch milliseconds as ``2026-11-28T10:00:00.123Z``.

    The formatted second and the last result are cached: under load many
    messages share a millisecond, and strftime is the expensive part.
    """
    global _ts_second, _ts_prefix, _ts_last_ms, _ts_last
    if epoch_ms == _ts_last_ms:
        return _ts_last
    second, millis = divmod(epoch_ms, 1000)
    if second != _ts_second:
        _ts_prefix = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(second))
        _ts_second = second
    _ts_last_ms = epoch_ms
    _ts_last = f"{_ts_prefix}{millis:03d}Z"
    return _ts_last


def ts_now() -> str:
    """The current time as a contract timestamp."""
    return format_ts(now_ms())
