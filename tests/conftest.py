"""Helpers shared by the core tests: a node on the memory engine, client frames,
and draining a session's outbox."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import msgspec
import trio.testing

from pubsub import Settings
from pubsub._core.node import Node, open_node
from pubsub._core.session import Session
from pubsub._engines.memory import MemoryEngine
from pubsub._protocol.frames import AnyClientFrame, decode_client_frame


def memory_engine(settings: Settings) -> MemoryEngine:
    return MemoryEngine(
        max_topics=settings.max_topics, max_messages=settings.max_messages_per_topic
    )


@asynccontextmanager
async def open_memory_node(settings: Settings | None = None) -> AsyncIterator[Node]:
    """A node on a memory engine, as ``trio-pubsub serve`` runs one (but unframed)."""
    settings = settings or Settings()
    async with open_node(settings, memory_engine(settings)) as node:
        yield node


def client_frame(fields: dict[str, Any]) -> AnyClientFrame:
    """A client frame as the transport would hand it to the node: JSON, then decoded."""
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
