"""Session outbox details that need a fake socket: the direct-write path."""

from __future__ import annotations

import msgspec
import trio
import trio.testing

from pubsub._core.counters import Counters
from pubsub._core.outbox import POLICIES
from pubsub._core.session import Burst, Session


def make_session(limit: int, drop_oldest: bool, accepted: list[bytes], room: int) -> Session:
    policy = POLICIES["drop_oldest" if drop_oldest else "disconnect"]()
    session = Session(max_queue_size=limit, policy=policy, framer=lambda b: b, counters=Counters())

    def write_now(data: bytes, published_at: float) -> int:
        taken = data[:room]
        accepted.append(taken)
        return len(taken)

    session.write_now = write_now
    return session


async def park_writer(session: Session, nursery: trio.Nursery, batches: list[list[bytes]]) -> None:
    async def writer() -> None:
        batches.append(list(await session.next_batch()))

    nursery.start_soon(writer)
    await trio.testing.wait_all_tasks_blocked()


async def test_idle_writer_gets_frames_written_directly() -> None:
    accepted: list[bytes] = []
    session = make_session(10, True, accepted, room=1000)
    batches: list[list[bytes]] = []
    async with trio.open_nursery() as nursery:
        await park_writer(session, nursery, batches)
        session.deliver([b'{"a":1}', b'{"a":2}'], 0)
        assert accepted == [b'{"a":1}{"a":2}']
        assert session.queued == 0
        session.send(b'{"x":1}')
        nursery.cancel_scope.cancel()
    assert batches == []


async def test_rest_of_a_partly_written_frame_stays_first_and_is_never_dropped() -> None:
    accepted: list[bytes] = []
    session = make_session(2, True, accepted, room=3)
    batches: list[list[bytes]] = []
    async with trio.open_nursery() as nursery:
        await park_writer(session, nursery, batches)
        session.deliver([b"AAAAAA"], 0)  # 3 bytes go out, 3 wait for the writer
        assert accepted == [b"AAA"]
        # The writer has been woken but not run yet: more events overflow the outbox.
        session.deliver([b"B1", b"B2", b"B3"], 0)
    [batch] = batches
    assert batch[0] == b"AAA"  # the rest of the frame, before anything else
    notice = msgspec.json.decode(batch[1])
    assert (notice["msg"], notice["dropped"]) == ("messages_dropped", 1)
    # The outbox holds 2 events (the rest of a frame is not one): the newest two.
    assert batch[2:] == [b"B2", b"B3"]


async def test_disconnect_keeps_the_rest_of_a_partly_written_frame() -> None:
    accepted: list[bytes] = []
    session = make_session(2, False, accepted, room=3)
    batches: list[list[bytes]] = []
    async with trio.open_nursery() as nursery:
        await park_writer(session, nursery, batches)
        session.deliver([b"AAAAAA"], 0)
        session.deliver([b"B1", b"B2", b"B3"], 0)
    [batch] = batches
    assert batch[0] == b"AAA"
    assert msgspec.json.decode(batch[1])["error"]["code"] == "SLOW_CONSUMER"
    assert session.close_reason is not None and session.close_reason.code == 1013


# ------------------------------------------------- direct writes held for the pass's burst


def burst_session(
    accepted: list[bytes], room: int = 1000, limit: int = 10
) -> tuple[Session, Burst]:
    burst = Burst()
    session = Session(
        max_queue_size=limit,
        policy=POLICIES["drop_oldest"](),
        framer=lambda b: b,
        counters=Counters(),
        burst=burst,
    )

    def write_now(data: bytes, published_at: float) -> int:
        accepted.append(data[:room])
        return min(room, len(data))

    session.write_now = write_now
    return session, burst


async def test_a_pass_s_direct_writes_leave_together_at_its_end() -> None:
    accepted: list[bytes] = []
    session, burst = burst_session(accepted)
    async with trio.open_nursery() as nursery:
        await park_writer(session, nursery, [])
        session.deliver([b"e1"], 2)
        session.send(b"ack")
        session.deliver([b"e2", b"e3"], 4, joined=b"e2e3")
        assert accepted == []  # held: nothing written within the pass
        assert burst.sessions == [session]
        burst.before_io_wait(0.0)
        assert accepted == [b"e1acke2e3"]  # one write, in order
        assert burst.sessions == []
        burst.before_io_wait(0.0)
        assert accepted == [b"e1acke2e3"]
        assert session.delivered == 3
        nursery.cancel_scope.cancel()


async def test_the_instrument_writes_before_trio_waits() -> None:
    accepted: list[bytes] = []
    session, burst = burst_session(accepted)
    trio.lowlevel.add_instrument(burst)
    try:
        async with trio.open_nursery() as nursery:
            await park_writer(session, nursery, [])
            session.deliver([b"e1"], 2)
            assert accepted == []
            await trio.lowlevel.checkpoint()  # the pass ends
            assert accepted == [b"e1"]
            nursery.cancel_scope.cancel()
    finally:
        trio.lowlevel.remove_instrument(burst)


async def test_held_bytes_go_first_when_the_writer_takes_over() -> None:
    """Held bytes count as written: a writer woken in the same pass (here by a drop
    notice) writes them before anything queued after them, and no policy drops them."""
    accepted: list[bytes] = []
    session, burst = burst_session(accepted, limit=1)
    batches: list[list[bytes]] = []
    async with trio.open_nursery() as nursery:
        await park_writer(session, nursery, batches)
        session.deliver([b"held1"], 5)
        session.deliver([b"held2"], 5)
        session.cork()
        session.deliver([b"q1", b"q2"], 4)  # over the bound of 1: q1 is dropped
        session.report_dropped(3)  # wakes the writer
        burst.before_io_wait(0.0)
    assert accepted == []  # the writer took everything
    [batch] = batches
    notice = msgspec.json.decode(batch[0])
    assert (notice["msg"], notice["dropped"]) == ("messages_dropped", 4)
    assert batch[1:] == [b"held1held2", b"q2"]


async def test_a_held_write_that_does_not_fit_keeps_its_rest_in_front() -> None:
    """At the burst the socket takes part of the held bytes while the session is corked
    with newer answers queued: the rest goes in front of them."""
    accepted: list[bytes] = []
    session, burst = burst_session(accepted, room=4)
    batches: list[list[bytes]] = []
    async with trio.open_nursery() as nursery:
        await park_writer(session, nursery, batches)
        session.deliver([b"AAAAAA"], 6)
        session.cork()  # the connection's reader is carrying out a read
        session.send(b"ack")
        burst.before_io_wait(0.0)
        assert accepted == [b"AAAA"]
        session.uncork()
    [batch] = batches
    assert batch == [b"AA", b"ack"]
