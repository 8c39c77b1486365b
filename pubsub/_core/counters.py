"""Node-wide delivery counters and the statistics snapshot built from them.

Below every other core module (topics, sessions and the node all update the
same :class:`Counters`), so none of them imports another for it.
"""

from __future__ import annotations

import msgspec


class Counters:
    """Counters shared by a node, its topic actors and its sessions."""

    __slots__ = (
        "connection_counter",
        "delivered",
        "dropped",
        "expired",
        "published",
        "rate_limited",
        "slow_consumer_disconnects",
    )

    def __init__(self) -> None:
        #: Messages this node published (acknowledged by the engine).
        self.published = 0
        #: Event frames (replays included) handed to connections and not
        #: removed again: less those dropped by ``drop_oldest`` and those a
        #: ``SLOW_CONSUMER`` close discarded.
        self.delivered = 0
        #: Event frames removed from full outboxes by ``drop_oldest``.
        self.dropped = 0
        #: Event frames not written because their message expired while queued.
        self.expired = 0
        self.slow_consumer_disconnects = 0
        #: Publishes refused with RATE_LIMITED (WebSocket and REST).
        self.rate_limited = 0
        #: Connections ever opened.
        self.connection_counter = 0


class TopicStats(msgspec.Struct, frozen=True):
    messages: int
    subscribers: int
    stored: int
    dropped: int


class WebSocketStats(msgspec.Struct, frozen=True):
    total_clients: int
    connection_counter: int


class DeliveryStats(msgspec.Struct, frozen=True):
    delivered: int
    dropped: int
    slow_consumer_disconnects: int
    rate_limited: int
    expired: int


class Stats(msgspec.Struct, frozen=True):
    """A snapshot for ``/stats`` and ``/metrics`` (the REST layer adds ``memory``)."""

    node_id: str
    uptime_sec: int
    topics: dict[str, TopicStats]
    total_topics: int
    total_subscribers: int
    total_messages: int
    websocket: WebSocketStats
    delivery: DeliveryStats
