"""Session outbox details that need a fake socket: the direct-write path."""

from __future__ import annotations

import msgspec
import trio
import trio.testing

from pubsub._core.counters import Counters
from pubsub._core.outbox import POLICIES
from pubsub._core.session import Session


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
