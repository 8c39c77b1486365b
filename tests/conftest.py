"""Helpers shared by the broker tests: build client frames, drain a session's outbox."""

from __future__ import annotations

from typing import Any

import msgspec
import trio.testing

from pubsub import Session
from pubsub._protocol import AnyClientFrame, decode_client_frame


def client_frame(fields: dict[str, Any]) -> AnyClientFrame:
    """A client frame as the transport would hand it to the broker: JSON, then decoded."""
    return decode_client_frame(msgspec.json.encode(fields))


async def drain(session: Session) -> list[dict[str, Any]]:
    """Let every task settle, then take and decode everything queued for ``session``.

    Returns ``[]`` when nothing is queued: :meth:`Session.next_batch` would block then,
    unless the session is closing (it then returns what is left, or an empty batch).
    """
    await trio.testing.wait_all_tasks_blocked()
    if not session.queued and session.is_open:
        return []
    batch = await session.next_batch()
    return [msgspec.json.decode(frame) for frame in batch]
