"""Contract timestamps: ISO-8601 UTC with milliseconds and ``Z``."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from pubsub._protocol.timestamps import format_ts, ts_now

TS_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.mark.parametrize(
    ("epoch_ms", "expected"),
    [
        (0, "1970-01-01T00:00:00.000Z"),
        (1, "1970-01-01T00:00:00.001Z"),
        (999, "1970-01-01T00:00:00.999Z"),
        (1000, "1970-01-01T00:00:01.000Z"),
        (1764324000123, "2025-11-28T10:00:00.123Z"),
        (1764324000999, "2025-11-28T10:00:00.999Z"),
        (1764324001000, "2025-11-28T10:00:01.000Z"),
        (951782400000, "2000-02-29T00:00:00.000Z"),
    ],
)
def test_format_ts(epoch_ms: int, expected: str) -> None:
    assert format_ts(epoch_ms) == expected
    assert TS_RE.fullmatch(expected)


def test_format_ts_is_right_whatever_came_before() -> None:
    # format_ts caches the formatted second; interleaved seconds must not leak.
    values = [1764324000123, 1764324000456, 0, 1764324000789, 1764324001000, 999, 1000]
    expected = {
        ms: datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.")
        + f"{ms % 1000:03d}Z"
        for ms in values
    }
    for ms in values * 2:
        assert format_ts(ms) == expected[ms]


def test_ts_now_is_current_utc_with_milliseconds() -> None:
    ts = ts_now()
    assert TS_RE.fullmatch(ts), ts
    parsed = datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    assert abs(parsed - datetime.now(UTC)) < timedelta(seconds=5)
