"""The engine seam: what is cluster-wide, behind one interface.

A node (one process) keeps what is local: the order of each topic's commands,
its local subscribers and the fan-out to them. An :class:`Engine` keeps what
every node must agree on:

- the topic registry (create, delete, list, describe);
- offsets and epochs: :meth:`Engine.publish` stores a batch of messages and
  answers with the first offset, the epoch and the publish time;
- history: the newest ``last_n`` messages, or everything after ``since_offset``
  if the epoch matches and nothing in between is gone (never a partial replay);
- the feed: every message published to a topic this node follows, from any
  node, handed to the node's :class:`Feed` in offset order, and the end of a
  deleted topic after everything published before the delete.

Model: centrifuge's ``Broker`` interface (``broker.go``: ``Publish``,
``History``) with ``broker_memory.go``; the node's topic actors play its hub.
:class:`~pubsub._engines.memory.MemoryEngine` is the implementation for one
process; every method there completes without yielding, so a topic actor's
subscribe (history, then live) is atomic with respect to its publishes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import msgspec
import trio

from .._protocol.frames import Message


class Publication(msgspec.Struct, gc=False):
    """A stored message: what the engine gives back in history and the feed.

    Not tracked by the garbage collector (it can be in no cycle): history rings
    hold many, and each tracked one would be scanned by every full collection.

    Attributes:
        frame: The wire bytes of its ``event`` frame on this node, set by the
            topic actor the first time it frames it (``None`` until then), so
            an engine that hands out the same object again (the memory engine's
            history) costs no second encoding.
    """

    offset: int
    ts: str
    message: Message
    frame: bytes | None = None
    #: Message TTL (v1.2): when it expires, epoch milliseconds; 0: never.
    expires: int = 0

    def __repr__(self) -> str:
        return f"Publication({self.offset}, {self.ts!r}, {self.message.id!r}, {self.expires})"


def expiry(now: int, ttl: int) -> int:
    """When a message published at ``now`` (epoch ms) with ``ttl`` ms expires; 0
    (never) when ``ttl`` is 0."""
    return now + ttl if ttl else 0


def unexpired(publications: list[Publication], now: int) -> tuple[list[Publication], int]:
    """The publications not expired at ``now`` (epoch ms), and how many were."""
    kept = [p for p in publications if not p.expires or p.expires > now]
    return kept, len(publications) - len(kept)


class TopicInfo(msgspec.Struct, frozen=True):
    """A topic as the engine knows it (cluster-wide)."""

    name: str
    #: Fixed for the life of this incarnation of the topic (a re-created topic,
    #: or an engine that lost its data, gets a new one).
    epoch: str
    #: Epoch milliseconds.
    created_at: int
    #: The newest message's offset; the number of messages ever published.
    offset: int
    #: Messages held for replay.
    stored: int
    #: Subscribers over every node, when the engine knows them (they may lag by
    #: a few seconds); None: only this node's are known.
    subscribers: int | None = None
    #: The TTL of its messages (v1.2), ms; 0: they never expire.
    message_ttl_ms: int = 0


class Published(msgspec.Struct, frozen=True):
    """What :meth:`Engine.publish` answers: the i-th message got ``first_offset + i``."""

    first_offset: int
    epoch: str
    #: Publish time of the batch (contract timestamp).
    ts: str


class History(msgspec.Struct, frozen=True):
    """What :meth:`Engine.history` answers."""

    #: The topic's newest offset when the history was read.
    offset: int
    epoch: str
    #: With ``since_offset``: whether everything after it is in ``publications``
    #: or expired. None when no ``since_offset`` was asked for.
    recovered: bool | None
    #: Unexpired messages only, oldest first.
    publications: list[Publication]
    #: With ``since_offset`` and ``recovered``: the messages after it that expired.
    expired: int = 0


class Feed(Protocol):
    """Where an engine hands what it learns to the node (the node implements it).

    Called on the node's trio thread. The memory engine calls these from inside
    :meth:`Engine.publish` and :meth:`Engine.delete_topic`.
    """

    def on_publications(
        self, topic: str, publications: list[Publication], *, repaired: bool = False
    ) -> None:
        """New messages of a followed topic, in offset order. ``repaired``: read back
        from the history after the feed broke (owed to subscribers that kept up, so
        not subject to their queue bounds)."""
        ...

    def on_topic_deleted(self, topic: str) -> None:
        """The topic was deleted; every message published before the delete was
        handed to :meth:`on_publications` first."""
        ...

    def on_topics_created(self, topics: list[str] | None) -> None:
        """Topics were created through another node (None: some may have been,
        the engine cannot say which), for wildcard subscriptions to take in."""
        ...

    def on_gap(self, topic: str, after: int, missed: int) -> None:
        """Offsets ``after + 1`` to ``after + missed`` of a followed topic can no longer
        be delivered (the feed broke and the history no longer holds them); they come
        right before the next publications handed over."""
        ...

    def subscriber_counts(self) -> dict[str, int]:
        """This node's subscribers per topic (for cluster-wide figures)."""
        ...


class Engine(Protocol):
    """The cluster-wide half of the broker. Errors are typed ``PubSubError``\\ s:
    ``TopicNotFound``, ``TopicExists``, ``LimitExceeded`` (``MAX_TOPICS``),
    ``Unavailable`` (the engine cannot be reached or is too slow)."""

    @property
    def kind(self) -> str:
        """``"memory"`` or ``"redis"`` (``/info``, ``/health``)."""
        ...

    @property
    def available(self) -> bool:
        """Whether the engine can be reached now (``/health``)."""
        ...

    @property
    def immediate(self) -> bool:
        """Whether every call completes without yielding (the memory engine): an
        idle topic actor may then carry out a command in its caller's turn."""
        ...

    async def run(
        self, feed: Feed, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve ``feed`` until cancelled; ``task_status.started()`` once usable."""
        ...

    def report_status(self, status: Callable[[], bytes]) -> None:
        """Publish this node's status (``status()``: JSON, asked every few seconds)
        for :meth:`node_statuses` on every node; an engine of one node keeps none."""
        ...

    async def node_statuses(self) -> list[bytes]:
        """The latest status of every live node of the cluster (empty for an
        engine of one node: the caller knows its own)."""
        ...

    async def create_topic(self, name: str, message_ttl_ms: int = 0) -> TopicInfo:
        """Register a topic (name already validated) whose messages expire after
        ``message_ttl_ms`` (0: never) unless a publish says otherwise."""
        ...

    async def delete_topic(self, name: str) -> None:
        """Delete a topic and its history; followers get ``on_topic_deleted``."""
        ...

    async def topic(self, name: str) -> TopicInfo:
        """One topic. Raises ``TopicNotFound``."""
        ...

    async def topics(self) -> list[TopicInfo]:
        """Every topic, sorted by name."""
        ...

    async def topic_count(self) -> int:
        """How many topics there are (cheap: ``/health`` asks on every probe)."""
        ...

    async def topic_names(self) -> list[str]:
        """Every topic's name (cheap: a wildcard subscribe matches them)."""
        ...

    async def publish(
        self, topic: str, messages: list[Message], ttls: list[int] | None = None
    ) -> Published:
        """Store ``messages`` (one call per batch, never one per message) and hand
        them to the feed of every node that follows the topic.

        ``ttls``, when given, is each message's own TTL in ms (0: the topic's);
        a message with a TTL gets ``expires`` = publish time + TTL."""
        ...

    async def history(
        self,
        topic: str,
        *,
        last_n: int = 0,
        since_offset: int | None = None,
        epoch: str | None = None,
    ) -> History:
        """The newest ``last_n`` stored unexpired messages, or (with ``since_offset``)
        every unexpired message after it when ``epoch`` matches and all are stored
        or expired, oldest first. Expiry is checked against
        ``timestamps.now_ms()`` (read through the module: tests move it)."""
        ...

    async def follow(self, topic: str) -> int | None:
        """Start handing ``topic``'s messages to the feed (this node has local
        subscribers); returns once nothing published after it can be missed.

        Returns the offset after which the feed continues (every later message
        will be handed over, in order), or None when the feed already covers the
        topic without interruption."""
        ...

    def unfollow(self, topic: str) -> None:
        """This node's last local subscriber of ``topic`` left."""
        ...
