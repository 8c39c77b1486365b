"""The memory engine: topics, offsets, epochs and history in this process.

Every method completes without yielding to the scheduler, and the feed is
called synchronously from inside :meth:`MemoryEngine.publish`: with one node
there is nobody else to tell, and a topic actor's subscribe (history, then
live events) stays atomic with respect to its publishes. A restart loses
everything; each topic incarnation gets a fresh epoch, so a resume across a
restart answers ``recovered: false``.
"""

from __future__ import annotations

import itertools
import os
from collections import deque
from collections.abc import Callable
from typing import Final

import trio

from .._core.engine import Feed, History, Publication, Published, TopicInfo, expiry, unexpired
from .._protocol import timestamps
from .._protocol.errors import LimitExceeded, TopicExists, TopicNotFound
from .._protocol.frames import Message
from .._protocol.timestamps import format_ts

_epochs: Final = itertools.count(1)
_epoch_prefix: Final = os.urandom(4).hex()


def new_epoch() -> str:
    """An epoch unique to this topic incarnation: random per process, counted within it."""
    return f"{_epoch_prefix}-{next(_epochs)}"


#: The ring of every topic nothing was published to yet (and of every topic when
#: ``MAX_MESSAGES_PER_TOPIC`` is 0): shared, and with no room it keeps nothing
#: put into it. A deque costs ~770 bytes even empty (its first block of 64
#: slots), more than the rest of an unused topic.
_NO_RING: Final = deque[Publication](maxlen=0)


class _Topic:
    __slots__ = ("created_at", "epoch", "expiring", "name", "offset", "ring", "ttl")

    def __init__(self, name: str, ttl: int) -> None:
        self.name = name
        self.epoch = new_epoch()
        self.created_at = timestamps.now_ms()
        self.offset = 0
        #: Its own ring from the first publish on (``MemoryEngine.publish``).
        self.ring: deque[Publication] = _NO_RING
        self.ttl = ttl
        #: Whether any message ever published here had a TTL: history reads of
        #: topics without one never look at expiry.
        self.expiring = ttl > 0

    def info(self) -> TopicInfo:
        return TopicInfo(
            self.name,
            self.epoch,
            self.created_at,
            self.offset,
            len(self.ring),
            message_ttl_ms=self.ttl,
        )


class MemoryEngine:
    """The engine of a single-process broker.

    Args:
        max_topics: ``MAX_TOPICS``.
        max_messages: ``MAX_MESSAGES_PER_TOPIC``: the replay ring per topic.
    """

    kind: Final = "memory"
    available: Final = True
    immediate: Final = True

    def __init__(self, *, max_topics: int, max_messages: int) -> None:
        self._max_topics = max_topics
        self._max_messages = max_messages
        self._topics: dict[str, _Topic] = {}
        self._feed: Feed | None = None

    async def run(
        self, feed: Feed, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        self._feed = feed
        task_status.started()
        try:
            await trio.sleep_forever()
        finally:
            self._feed = None

    # ---------------------------------------------------------------- registry

    async def create_topic(self, name: str, message_ttl_ms: int = 0) -> TopicInfo:
        if name in self._topics:
            raise TopicExists(f"topic {name!r} already exists")
        if len(self._topics) >= self._max_topics:
            raise LimitExceeded(f"the broker has the maximum of {self._max_topics} topics")
        topic = self._topics[name] = _Topic(name, message_ttl_ms)
        return topic.info()

    async def delete_topic(self, name: str) -> None:
        self._get(name)
        del self._topics[name]
        if self._feed is not None:
            self._feed.on_topic_deleted(name)

    async def topic(self, name: str) -> TopicInfo:
        return self._get(name).info()

    async def topics(self) -> list[TopicInfo]:
        return [self._topics[name].info() for name in sorted(self._topics)]

    async def topic_count(self) -> int:
        return len(self._topics)

    async def topic_names(self) -> list[str]:
        return list(self._topics)

    def report_status(self, status: Callable[[], bytes]) -> None:
        return None  # one node: nobody else asks

    async def node_statuses(self) -> list[bytes]:
        return []

    def _get(self, name: str) -> _Topic:
        try:
            return self._topics[name]
        except KeyError:
            raise TopicNotFound(f"topic {name!r} does not exist") from None

    # ---------------------------------------------------------------- messages

    async def publish(
        self, topic: str, messages: list[Message], ttls: list[int] | None = None
    ) -> Published:
        state = self._get(topic)
        now = timestamps.now_ms()
        ts = format_ts(now)
        first = state.offset + 1
        if ttls is None and not state.ttl:
            publications = [
                Publication(offset, ts, message)
                for offset, message in enumerate(messages, start=first)
            ]
        else:
            state.expiring = True
            default = state.ttl
            publications = [
                Publication(offset, ts, message, None, expiry(now, ttl or default))
                for offset, message, ttl in zip(
                    itertools.count(first), messages, ttls or itertools.repeat(0), strict=False
                )
            ]
        state.offset += len(messages)
        ring = state.ring
        if ring is _NO_RING and self._max_messages:
            ring = state.ring = deque(maxlen=self._max_messages)
        ring.extend(publications)
        if self._feed is not None:
            self._feed.on_publications(topic, publications)
        return Published(first, state.epoch, ts)

    async def history(
        self,
        topic: str,
        *,
        last_n: int = 0,
        since_offset: int | None = None,
        epoch: str | None = None,
    ) -> History:
        state = self._get(topic)
        ring = state.ring
        if since_offset is not None:
            missing = state.offset - since_offset
            if epoch != state.epoch or missing < 0 or missing > len(ring):
                return History(state.offset, state.epoch, False, [])
            start = len(ring) - missing
            replay = list(itertools.islice(ring, start, None))
            expired = 0
            if state.expiring:
                replay, expired = unexpired(replay, timestamps.now_ms())
            return History(state.offset, state.epoch, True, replay, expired)
        replay = []
        if last_n and ring:
            if state.expiring:
                # The newest last_n that have not expired: walk back from the newest.
                now = timestamps.now_ms()
                for publication in reversed(ring):
                    if not publication.expires or publication.expires > now:
                        replay.append(publication)
                        if len(replay) == last_n:
                            break
                replay.reverse()
            else:
                replay = list(itertools.islice(ring, max(0, len(ring) - last_n), None))
        return History(state.offset, state.epoch, None, replay)

    async def follow(self, topic: str) -> int | None:
        """Nothing to do: this process's feed gets every topic's messages."""
        return None

    def unfollow(self, topic: str) -> None:
        """Nothing to do (see :meth:`follow`)."""
