"""The token bucket, with explicit times."""

from __future__ import annotations

import pytest

from pubsub._core.ratelimit import TokenBucket


def test_a_full_bucket_gives_its_burst_then_says_when_the_next_token_is_due() -> None:
    bucket = TokenBucket(rate=4, burst=3, now=100.0)  # times exact in binary
    assert [bucket.take(100.0) for _ in range(3)] == [0, 0, 0]
    assert bucket.take(100.0) == 250  # one token every 250 ms
    assert bucket.take(100.125) == 125
    assert bucket.take(100.25) == 0
    assert bucket.take(100.25) == 250


def test_refill_stops_at_the_burst() -> None:
    bucket = TokenBucket(rate=2, burst=2, now=0.0)
    assert bucket.take(0.0) == bucket.take(0.0) == 0
    assert not bucket.full(0.0)
    assert bucket.full(60.0)
    assert [bucket.take(60.0) for _ in range(3)] == [0, 0, 500]


def test_a_wait_is_at_least_a_millisecond() -> None:
    bucket = TokenBucket(rate=1_000_000, burst=1, now=0.0)
    assert bucket.take(0.0) == 0
    assert bucket.take(0.0) == 1


@pytest.mark.parametrize(("rate", "burst"), [(0, 1), (-1, 1), (1, 0), (1, 0.5)])
def test_a_bucket_that_could_never_give_a_token_is_refused(rate: float, burst: float) -> None:
    with pytest.raises(ValueError, match="rate > 0"):
        TokenBucket(rate, burst)
