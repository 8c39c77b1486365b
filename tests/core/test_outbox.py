"""Unit tests of the outbox: bounds, policies, pinned entries and the dropped notice.

Synchronous: the outbox is plain data. Frames are tagged bytes so a test can tell
what came out of :meth:`Outbox.take`: ``e<n>`` live events, ``c<n>`` control frames,
``r<n>`` replayed events, ``rest`` (``s<n>`` in the property test) a partial rest
and ``dropped:<n>`` the notice.
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pubsub._settings
from pubsub._core.outbox import (
    DISCONNECT,
    POLICIES,
    Disconnect,
    DropOldest,
    Outbox,
    Pinned,
    Policy,
    expiring_frame,
)
from pubsub._protocol import timestamps


def notice(n: int) -> bytes:
    return b"dropped:%d" % n


def make(
    max_frames: int = 4,
    *,
    max_bytes: int = 0,
    policy: Policy | None = None,
    dropped_notice: Callable[[int], bytes] = notice,
) -> Outbox:
    return Outbox(
        max_frames=max_frames,
        max_bytes=max_bytes,
        policy=policy if policy is not None else DropOldest(),
        dropped_notice=dropped_notice,
    )


def events(*numbers: int) -> list[bytes]:
    return [b"e%d" % n for n in numbers]


def enqueue(outbox: Outbox, frames: list[bytes]) -> int:
    """Enqueue live events with their true byte count."""
    return outbox.enqueue(frames, sum(len(frame) for frame in frames))


def control(*numbers: int) -> list[Pinned]:
    return [Pinned(b"c%d" % n) for n in numbers]


# -------------------------------------------------------------- frame bound


def test_accepted_under_the_frame_bound() -> None:
    outbox = make(4)
    assert enqueue(outbox, events(1, 2)) == 0
    assert enqueue(outbox, events(3, 4)) == 0
    assert outbox.live_events == 4
    assert outbox.live_bytes == 8
    assert outbox.dropped_pending == 0
    assert list(outbox.queue) == events(1, 2, 3, 4)
    assert len(outbox) == 4
    assert list(outbox.take()) == events(1, 2, 3, 4)


def test_drop_oldest_drops_the_oldest_and_keeps_the_newest_in_order() -> None:
    outbox = make(3)
    assert enqueue(outbox, events(1, 2, 3)) == 0
    assert enqueue(outbox, events(4)) == 1
    assert enqueue(outbox, events(5, 6)) == 2
    assert list(outbox.queue) == events(4, 5, 6)
    assert outbox.live_events == 3
    assert outbox.dropped_pending == 3
    assert list(outbox.take()) == [notice(3), *events(4, 5, 6)]


def test_drop_oldest_with_a_batch_larger_than_the_bound_keeps_its_newest() -> None:
    outbox = make(2)
    assert enqueue(outbox, events(1)) == 0
    assert enqueue(outbox, events(2, 3, 4, 5)) == 3
    assert list(outbox.queue) == events(4, 5)
    assert outbox.live_events == 2
    assert outbox.live_bytes == 4


def test_drop_oldest_into_an_empty_outbox_with_a_too_large_batch() -> None:
    outbox = make(2)
    assert enqueue(outbox, events(1, 2, 3)) == 1
    assert list(outbox.take()) == [notice(1), *events(2, 3)]


def test_control_and_replayed_frames_do_not_count_against_max_frames() -> None:
    outbox = make(4)
    outbox.replay([b"r%d" % n for n in range(10)])
    outbox.put(control(1, 2, 3, 4, 5))
    assert outbox.live_events == 0
    assert enqueue(outbox, events(1)) == 0
    assert outbox.dropped_pending == 0
    assert outbox.live_events == 1
    assert len(outbox) == 16


def test_disconnect_policy_ignores_replayed_and_control_frames() -> None:
    outbox = make(4, policy=Disconnect())
    outbox.replay([b"r%d" % n for n in range(10)])
    outbox.put(control(1, 2, 3, 4, 5))
    assert enqueue(outbox, events(1)) == 0
    assert enqueue(outbox, events(2, 3, 4)) == 0
    assert outbox.live_events == 4


def test_control_and_replayed_frames_are_never_dropped() -> None:
    outbox = make(2)
    outbox.replay([b"r1", b"r2"])
    assert enqueue(outbox, events(1, 2)) == 0
    outbox.put(control(1))
    assert enqueue(outbox, events(3, 4, 5)) == 3
    assert list(outbox.take()) == [notice(3), b"r1", b"r2", *control(1), *events(4, 5)]


def test_pinned_oldest_drop_oldest_removes_the_oldest_event_behind_them() -> None:
    outbox = make(2)
    outbox.put(control(1, 2))
    assert enqueue(outbox, events(1)) == 0
    outbox.replay([b"r1"])
    assert enqueue(outbox, events(2)) == 0
    assert enqueue(outbox, events(3)) == 1
    assert list(outbox.queue) == [*control(1, 2), b"r1", *events(2, 3)]
    assert outbox.live_events == 2
    assert outbox.live_bytes == 4


def test_replayed_frames_are_pinned_and_control_frames_stay_pinned() -> None:
    outbox = make(2)
    outbox.replay([b"r1"])
    outbox.put(control(1))
    assert all(type(entry) is Pinned for entry in outbox.queue)


# ------------------------------------------------------------ take, notice


def test_take_puts_the_dropped_notice_first() -> None:
    calls: list[int] = []

    def counting_notice(n: int) -> bytes:
        calls.append(n)
        return notice(n)

    outbox = make(1, dropped_notice=counting_notice)
    outbox.put(control(1))
    enqueue(outbox, events(1))
    enqueue(outbox, events(2))
    enqueue(outbox, events(3))
    assert calls == []  # the notice is built once, at take()
    assert list(outbox.take()) == [notice(2), *control(1), *events(3)]
    assert calls == [2]


def test_take_puts_the_dropped_notice_after_a_partial_rest() -> None:
    outbox = make(1)
    outbox.put_rest(b"rest")
    assert outbox.partial
    assert enqueue(outbox, events(1)) == 0
    assert enqueue(outbox, events(2)) == 1
    assert list(outbox.queue) == [b"rest", *events(2)]
    assert list(outbox.take()) == [b"rest", notice(1), *events(2)]
    assert not outbox.partial


def test_take_without_drops_has_no_notice() -> None:
    outbox = make(4)
    outbox.put_rest(b"rest")
    enqueue(outbox, events(1))
    assert list(outbox.take()) == [b"rest", *events(1)]


# -------------------------------------------------------------------- pongs


def test_only_the_latest_pong_waits_and_take_writes_it_behind_everything() -> None:
    outbox = make(4)
    outbox.put_rest(b"rest")
    enqueue(outbox, events(1))
    assert outbox.put_pong(b"pong1", 1)
    assert outbox.put_pong(b"pong2", 2)
    assert len(outbox.queue) == 2  # the pong is not queued: one slot, replaced
    assert list(outbox.take()) == [b"rest", *events(1), b"pong2"]
    assert outbox.pong is None and outbox.unanswered_pings == 0
    assert list(outbox.take()) == []


def test_more_pings_than_max_frames_without_a_take_is_a_flood() -> None:
    outbox = make(4)
    enqueue(outbox, events(1))
    assert outbox.put_pong(b"pong", 3)
    assert outbox.put_pong(b"pong", 1)  # 4: at the bound
    assert not outbox.put_pong(b"pong", 1)  # 5: over it
    outbox.take()
    enqueue(outbox, events(2))
    assert outbox.put_pong(b"pong", 4)  # counted afresh once the peer took frames


def test_discard_forgets_the_waiting_pong() -> None:
    outbox = make(4)
    enqueue(outbox, events(1))
    outbox.put_pong(b"pong", 1)
    outbox.discard()
    assert outbox.take() == []


# ------------------------------------------------------------------- expiry


def expired_notice(n: int) -> bytes:
    return b"expired:%d" % n


def test_take_leaves_out_frames_that_expired_while_queued(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(timestamps, "now_ms", lambda: 1_000)
    outbox = Outbox(
        max_frames=2, policy=DropOldest(), dropped_notice=notice, expired_notice=expired_notice
    )
    outbox.put_rest(b"rest")
    outbox.expiring = True
    fresh = expiring_frame(b"x2", 1_001)
    enqueue(outbox, [b"e1", expiring_frame(b"x1", 1_000), fresh])  # e1 dropped: bound
    outbox.replay([expiring_frame(b"r1", 999), expiring_frame(b"r2", 5_000)])
    # The partial rest stays first, then the dropped and expired notices.
    assert outbox.take() == [b"rest", notice(1), expired_notice(2), fresh, b"r2"]
    assert outbox.expired == 2 and not outbox.expiring
    # Nothing expired: no notice, and the count is reset.
    outbox.expiring = True
    enqueue(outbox, [expiring_frame(b"x3", 2_000)])
    assert outbox.take() == [b"x3"] and outbox.expired == 0


def test_an_expiring_frame_is_a_live_event_for_the_policy() -> None:
    outbox = make(1)
    outbox.expiring = True
    enqueue(outbox, [expiring_frame(b"x1", 10**15)])
    enqueue(outbox, events(2))
    assert outbox.take() == [notice(1), *events(2)]


def test_take_resets_the_counts() -> None:
    outbox = make(2)
    outbox.replay([b"r1"])
    enqueue(outbox, events(1, 2, 3))
    assert outbox.dropped_pending == 1
    outbox.take()
    assert outbox.live_events == 0
    assert outbox.live_bytes == 0
    assert outbox.dropped_pending == 0
    assert not outbox.queue
    assert len(outbox) == 0
    # The bound starts over, and no stale notice comes with the next take.
    assert enqueue(outbox, events(4, 5)) == 0
    assert list(outbox.take()) == events(4, 5)
    assert list(outbox.take()) == []


def test_take_returns_a_fresh_queue() -> None:
    outbox = make(4)
    enqueue(outbox, events(1))
    batch = outbox.take()
    enqueue(outbox, events(2))
    assert list(batch) == events(1)
    assert list(outbox.queue) == events(2)


# -------------------------------------------------------------- disconnect


def test_disconnect_returns_disconnect_and_leaves_the_queue_untouched() -> None:
    outbox = make(2, policy=Disconnect())
    outbox.put(control(1))
    assert enqueue(outbox, events(1, 2)) == 0
    assert enqueue(outbox, events(3)) == DISCONNECT
    assert DISCONNECT == -1
    assert list(outbox.queue) == [*control(1), *events(1, 2)]
    assert outbox.live_events == 2
    assert outbox.live_bytes == 4
    assert outbox.dropped_pending == 0


def test_disconnect_on_a_batch_larger_than_the_bound() -> None:
    outbox = make(2, policy=Disconnect())
    assert enqueue(outbox, events(1, 2, 3)) == DISCONNECT
    assert not outbox.queue
    assert outbox.live_events == 0


# ----------------------------------------------------------------- discard


def test_discard_forgets_everything_and_counts_events() -> None:
    outbox = make(4)
    outbox.put(control(1))
    outbox.replay([b"r1", b"r2"])
    enqueue(outbox, events(1, 2, 3))
    assert outbox.discard() == 5  # 3 live + 2 replayed, not the control frame
    assert not outbox.queue
    assert outbox.live_events == 0
    assert outbox.live_bytes == 0


def test_discard_keeps_only_a_partial_rest() -> None:
    outbox = make(1)
    outbox.put_rest(b"rest")
    outbox.put(control(1))
    outbox.replay([b"r1"])
    enqueue(outbox, events(1))
    enqueue(outbox, events(2))
    assert outbox.dropped_pending == 1
    assert outbox.discard() == 2
    assert list(outbox.queue) == [b"rest"]
    assert outbox.dropped_pending == 0
    assert outbox.live_events == 0
    assert list(outbox.take()) == [b"rest"]


def test_discard_of_an_empty_outbox() -> None:
    outbox = make(1)
    assert outbox.discard() == 0
    assert not outbox.queue


def test_replayed_count_resets_on_take() -> None:
    outbox = make(4)
    outbox.replay([b"r1", b"r2"])
    outbox.take()
    enqueue(outbox, events(1))
    assert outbox.discard() == 1


# -------------------------------------------------------------- byte bound


def test_byte_bound_drop_oldest_drops_until_within_bytes() -> None:
    outbox = make(100, max_bytes=10)
    frames = [b"a" * 4, b"b" * 4, b"c" * 4]
    assert outbox.enqueue(frames[:2], 8) == 0
    assert outbox.live_bytes == 8
    assert outbox.enqueue(frames[2:], 4) == 1
    assert list(outbox.queue) == frames[1:]
    assert outbox.live_bytes == 8
    assert outbox.live_bytes <= outbox.max_bytes
    # A big one drops both older ones, then stands alone.
    assert outbox.enqueue([b"d" * 9], 9) == 2
    assert list(outbox.queue) == [b"d" * 9]
    assert outbox.live_bytes == 9
    assert outbox.live_events == 1


def test_byte_bound_exactly_at_the_bound_is_accepted() -> None:
    outbox = make(100, max_bytes=8)
    assert outbox.enqueue([b"a" * 4, b"b" * 4], 8) == 0
    assert outbox.live_bytes == 8


def test_single_event_larger_than_max_bytes_into_an_outbox_without_live_events() -> None:
    outbox = make(100, max_bytes=10)
    outbox.put(control(1))
    outbox.replay([b"r" * 50])
    big = b"x" * 1000
    assert outbox.enqueue([big], len(big)) == 0
    assert outbox.live_events == 1
    assert outbox.live_bytes == 1000
    assert list(outbox.take()) == [*control(1), b"r" * 50, big]


def test_single_large_event_with_disconnect_into_an_empty_outbox_is_accepted() -> None:
    outbox = make(100, max_bytes=10, policy=Disconnect())
    assert outbox.enqueue([b"x" * 1000], 1000) == 0


def test_byte_bound_acts_with_one_live_event_queued_drop_oldest() -> None:
    outbox = make(100, max_bytes=10)
    assert outbox.enqueue([b"small"], 5) == 0
    big = b"x" * 1000
    assert outbox.enqueue([big], len(big)) == 1
    assert list(outbox.queue) == [big]
    assert outbox.live_bytes == 1000
    assert list(outbox.take()) == [notice(1), big]


def test_byte_bound_acts_with_one_live_event_queued_disconnect() -> None:
    outbox = make(100, max_bytes=10, policy=Disconnect())
    assert outbox.enqueue([b"small"], 5) == 0
    assert outbox.enqueue([b"x" * 1000], 1000) == DISCONNECT
    assert list(outbox.queue) == [b"small"]
    assert outbox.live_bytes == 5


def test_two_small_events_over_the_byte_bound_in_one_batch() -> None:
    outbox = make(100, max_bytes=10)
    assert outbox.enqueue([b"a" * 6, b"b" * 6], 12) == 1
    assert list(outbox.queue) == [b"b" * 6]
    assert outbox.live_bytes == 6


def test_max_bytes_zero_means_no_byte_bound() -> None:
    outbox = make(3, max_bytes=0, policy=Disconnect())
    huge = [b"x" * 1_000_000, b"y" * 2_000_000, b"z" * 3_000_000]
    assert enqueue(outbox, huge) == 0
    assert outbox.live_bytes == 6_000_000
    assert outbox.live_events == 3


def test_live_bytes_tracks_sums_after_drops() -> None:
    outbox = make(3)
    sizes = [1, 20, 300, 4000, 50000]
    for size in sizes:
        enqueue(outbox, [b"x" * size])
    assert outbox.live_bytes == 300 + 4000 + 50000
    outbox.put(control(1))
    enqueue(outbox, [b"y" * 7])
    assert outbox.live_bytes == 4000 + 50000 + 7
    assert outbox.live_bytes == sum(len(e) for e in outbox.queue if type(e) is bytes)


def test_byte_bound_never_drops_pinned_entries() -> None:
    outbox = make(100, max_bytes=10)
    outbox.put_rest(b"R" * 100)
    outbox.replay([b"r" * 100])
    assert outbox.enqueue([b"a" * 6], 6) == 0
    assert outbox.enqueue([b"b" * 6], 6) == 1
    assert list(outbox.queue) == [b"R" * 100, b"r" * 100, b"b" * 6]
    assert list(outbox.take()) == [b"R" * 100, notice(1), b"r" * 100, b"b" * 6]


# ---------------------------------------------------------------- registry


def test_policies_match_the_settings_literal() -> None:
    assert set(POLICIES) == set(typing.get_args(pubsub._settings.Policy))
    assert len(POLICIES) == len(typing.get_args(pubsub._settings.Policy))


def test_policies_are_registered_under_their_names() -> None:
    assert POLICIES["drop_oldest"] is DropOldest
    assert POLICIES["disconnect"] is Disconnect
    for name, policy in POLICIES.items():
        assert policy.name == name


# ---------------------------------------------------------------- property


@dataclass(frozen=True)
class Enqueue:
    count: int
    size: int


@dataclass(frozen=True)
class Put:
    count: int


@dataclass(frozen=True)
class Replay:
    count: int


@dataclass(frozen=True)
class Take:
    pass


@dataclass(frozen=True)
class Rest:
    """Write the rest of a partly written frame (only when the outbox is empty)."""


Op = Enqueue | Put | Replay | Take | Rest

operations: st.SearchStrategy[Op] = st.one_of(
    st.builds(Enqueue, st.integers(1, 6), st.integers(1, 8)),
    st.builds(Put, st.integers(1, 3)),
    st.builds(Replay, st.integers(1, 3)),
    st.just(Take()),
    st.just(Rest()),
)


@settings(max_examples=300, deadline=None)
@given(
    max_frames=st.integers(1, 5),
    max_bytes=st.sampled_from([0, 0, 10, 25]),
    ops=st.lists(operations, max_size=40),
)
def test_drop_oldest_property(max_frames: int, max_bytes: int, ops: list[Op]) -> None:
    outbox = make(max_frames, max_bytes=max_bytes)
    next_event = next_pinned = 0
    enqueued = dropped = notified = 0
    taken_events: list[int] = []
    taken_pinned: list[int] = []
    put_pinned: list[int] = []

    def take() -> None:
        nonlocal notified
        batch = list(outbox.take())
        for index, entry in enumerate(batch):
            if entry.startswith(b"dropped:"):
                assert type(entry) is bytes
                # First, or second behind the rest of a partly written frame.
                assert index == 0 or (index == 1 and batch[0].startswith(b"s"))
                notified += int(entry.removeprefix(b"dropped:"))
            elif entry.startswith(b"e"):
                assert type(entry) is bytes
                taken_events.append(int(entry[1:].split(b".")[0]))
            else:
                assert type(entry) is Pinned
                taken_pinned.append(int(entry[1:]))

    for op in ops:
        if isinstance(op, Enqueue):
            frames = []
            for _ in range(op.count):
                next_event += 1
                # Pad to the chosen size; the number stays readable.
                frame = b"e%d." % next_event
                frames.append(frame + b"." * max(0, op.size - len(frame)))
            verdict = outbox.enqueue(frames, sum(map(len, frames)))
            assert verdict >= 0
            enqueued += op.count
            dropped += verdict
            assert outbox.live_events <= max_frames
            if max_bytes and outbox.live_events > 1:
                assert outbox.live_bytes <= max_bytes
        elif isinstance(op, Put):
            entries = []
            for _ in range(op.count):
                next_pinned += 1
                entries.append(Pinned(b"c%d" % next_pinned))
                put_pinned.append(next_pinned)
            outbox.put(entries)
        elif isinstance(op, Replay):
            replayed = []
            for _ in range(op.count):
                next_pinned += 1
                replayed.append(b"r%d" % next_pinned)
                put_pinned.append(next_pinned)
            outbox.replay(replayed)
        elif isinstance(op, Rest):
            if not outbox.queue:
                next_pinned += 1
                outbox.put_rest(b"s%d" % next_pinned)
                put_pinned.append(next_pinned)
        else:
            take()
            assert outbox.live_events == 0
            assert outbox.dropped_pending == 0
        queued_live = [e for e in outbox.queue if type(e) is bytes]
        assert outbox.live_events == len(queued_live)
        assert outbox.live_bytes == sum(map(len, queued_live))
    take()

    assert dropped + len(taken_events) == enqueued
    assert notified == dropped
    assert taken_events == sorted(taken_events)
    assert len(set(taken_events)) == len(taken_events)
    assert taken_pinned == put_pinned


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_every_policy_accepts_within_bounds(name: str) -> None:
    outbox = make(2, policy=POLICIES[name]())
    assert enqueue(outbox, events(1, 2)) == 0
    assert list(outbox.take()) == events(1, 2)
