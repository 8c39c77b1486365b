"""Topics the configuration file declares, created before the server listens.

The server starts its engine (:meth:`Engine.run`) before it opens its
listeners, and opens them only once the engine has reported ``started``. So
an engine that creates the declared topics between its own start and that
report guarantees that they exist when the first client can connect, which
creating them through the node once the server runs could not (it is
listening by then). :class:`DeclaringEngine` wraps the engine the server
would use and does exactly that; every other call goes straight to the wrapped
engine (the wrapper returns its coroutines as they are, adding no await).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine, Sequence
from functools import partial
from typing import Any

import trio

from .._core.engine import Engine, Feed, History, Published, TopicInfo
from .._protocol.errors import PubSubError, TopicExists
from .._protocol.frames import Message
from .config import DeclaredTopic

log = logging.getLogger("pubsub.server")


class DeclarationError(Exception):
    """A declared topic could not be created (the broker does not start)."""


class DeclaringEngine:
    """``engine``, which creates ``topics`` once it runs, before it reports ready.

    Args:
        engine: The engine the server would use.
        topics: The declared topics; one that exists already is kept as it is.
        message_ttl: ``MESSAGE_TTL``, the TTL of a topic that declares none.
    """

    def __init__(
        self, engine: Engine, topics: Sequence[DeclaredTopic], *, message_ttl: int
    ) -> None:
        self._engine = engine
        self._topics = tuple(topics)
        self._message_ttl = message_ttl

    async def run(
        self, feed: Feed, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(self._engine.run, feed))
            await self._declare()
            task_status.started()

    async def _declare(self) -> None:
        """Create every declared topic that does not exist yet.

        Raises:
            DeclarationError: the engine refused one (``MAX_TOPICS``, Redis
                unreachable, ...).
        """
        for topic in self._topics:
            ttl = self._message_ttl if topic.message_ttl_ms is None else topic.message_ttl_ms
            try:
                await self._engine.create_topic(topic.name, ttl)
            except TopicExists:
                log.info("declared topic %r exists already", topic.name)
            except PubSubError as exc:
                raise DeclarationError(
                    f"cannot create the declared topic {topic.name!r}: "
                    f"{exc.code.value}: {exc.message}"
                ) from None
            else:
                log.info("created the declared topic %r (message TTL %d ms)", topic.name, ttl)

    # Everything else is the wrapped engine's.

    @property
    def kind(self) -> str:
        return self._engine.kind

    @property
    def available(self) -> bool:
        return self._engine.available

    @property
    def immediate(self) -> bool:
        return self._engine.immediate

    def create_topic(self, name: str, message_ttl_ms: int = 0) -> Coroutine[Any, Any, TopicInfo]:
        return self._engine.create_topic(name, message_ttl_ms)

    def delete_topic(self, name: str) -> Coroutine[Any, Any, None]:
        return self._engine.delete_topic(name)

    def topic(self, name: str) -> Coroutine[Any, Any, TopicInfo]:
        return self._engine.topic(name)

    def topics(self) -> Coroutine[Any, Any, list[TopicInfo]]:
        return self._engine.topics()

    def topic_count(self) -> Coroutine[Any, Any, int]:
        return self._engine.topic_count()

    def topic_names(self) -> Coroutine[Any, Any, list[str]]:
        return self._engine.topic_names()

    def publish(
        self, topic: str, messages: list[Message], ttls: list[int] | None = None
    ) -> Coroutine[Any, Any, Published]:
        return self._engine.publish(topic, messages, ttls)

    def history(
        self,
        topic: str,
        *,
        last_n: int = 0,
        since_offset: int | None = None,
        epoch: str | None = None,
    ) -> Coroutine[Any, Any, History]:
        return self._engine.history(topic, last_n=last_n, since_offset=since_offset, epoch=epoch)

    def follow(self, topic: str) -> Coroutine[Any, Any, int | None]:
        return self._engine.follow(topic)

    def report_status(self, status: Callable[[], bytes]) -> None:
        self._engine.report_status(status)

    def node_statuses(self) -> Coroutine[Any, Any, list[bytes]]:
        return self._engine.node_statuses()

    def unfollow(self, topic: str) -> None:
        self._engine.unfollow(topic)
