"""The REST API's request and response bodies as msgspec types.

The routes (:mod:`pubsub._server.http`) decode requests into these and encode
their answers from them, and the OpenAPI document
(:mod:`pubsub._server.schemas`) is generated from the same types, so the
document cannot drift from what the server sends. The first paragraph of a
docstring here is the schema's public description.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

import msgspec

from .._core.counters import Stats
from .._protocol.errors import RestError as RestError
from .._protocol.frames import TOPIC_NAME_PATTERN, TOPIC_NAME_RULE, Message, MessageId, TtlMs
from .._protocol.timestamps import MAX_TTL_MS
from .._settings import Settings

#: Messages a history call returns without ``limit``.
DEFAULT_HISTORY_LIMIT: Final = 100

#: A contract timestamp.
Timestamp = Annotated[
    str, msgspec.Meta(description="ISO-8601 UTC with milliseconds: 2026-11-28T10:00:00.123Z")
]


class CreateTopic(msgspec.Struct, frozen=True):
    """The body of `POST /topics`."""

    # The rule is checked by the node (its message names the rule); the schema says it.
    name: Annotated[
        str,
        msgspec.Meta(
            description=f"the topic's name: {TOPIC_NAME_RULE}",
            extra_json_schema={"pattern": TOPIC_NAME_PATTERN, "minLength": 1, "maxLength": 128},
        ),
    ]
    #: Message TTL (v1.2) of the topic's messages; None: ``MESSAGE_TTL``.
    message_ttl_ms: Annotated[
        Annotated[int, msgspec.Meta(ge=0, le=MAX_TTL_MS)] | None,
        msgspec.Meta(
            description="ms its messages stay deliverable (0: forever; default MESSAGE_TTL)"
        ),
    ] = None


class RestMessage(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The body of `POST /topics/{name}/messages`."""

    payload: Annotated[msgspec.Raw, msgspec.Meta(description="any JSON value")]
    id: Annotated[
        MessageId | None, msgspec.Meta(description="the message id (default: 32 random hex digits)")
    ] = None
    #: Message TTL (v1.2): replaces the topic's for this message.
    ttl_ms: Annotated[
        TtlMs | None, msgspec.Meta(description="ms this message stays deliverable")
    ] = None


class TopicCreated(msgspec.Struct, frozen=True):
    """`POST /topics` succeeded."""

    status: Literal["created"]
    topic: str
    ts: Timestamp


class TopicDeleted(msgspec.Struct, frozen=True):
    """`DELETE /topics/{name}` succeeded: its subscribers got every message
    published before, then `topic_deleted`."""

    status: Literal["deleted"]
    topic: str
    ts: Timestamp


class TopicSummary(msgspec.Struct, frozen=True):
    """A topic in `GET /topics`."""

    name: str
    subscribers: int
    messages: Annotated[int, msgspec.Meta(description="messages ever published")]
    created_at: Timestamp


class TopicList(msgspec.Struct, frozen=True):
    """`GET /topics`: every topic, sorted by name."""

    topics: list[TopicSummary]


class TopicDetail(msgspec.Struct, frozen=True):
    """`GET /topics/{name}`."""

    name: str
    subscribers: int
    messages: Annotated[int, msgspec.Meta(description="messages ever published")]
    stored: Annotated[int, msgspec.Meta(description="messages held for replay")]
    offset: Annotated[int, msgspec.Meta(description="the newest message's offset")]
    epoch: str
    message_ttl_ms: int
    created_at: Timestamp


class PublishResult(msgspec.Struct, frozen=True):
    """`POST /topics/{name}/messages` succeeded: the message is stored."""

    status: Literal["published"]
    topic: str
    id: str
    offset: int
    ts: Timestamp


class StoredMessage(msgspec.Struct, frozen=True, omit_defaults=True):
    """A message in a history answer."""

    offset: int
    ts: Timestamp
    message: Message
    expires_at: Timestamp | None = None


class MessageHistory(msgspec.Struct, frozen=True):
    """`GET /topics/{name}/messages`: stored, unexpired messages after
    `since_offset`, oldest first."""

    topic: str
    epoch: str
    offset: Annotated[int, msgspec.Meta(description="the topic's newest offset")]
    messages: list[StoredMessage]


class EngineStatus(msgspec.Struct, frozen=True):
    """The engine and whether it can be reached."""

    kind: Annotated[str, msgspec.Meta(description="memory or redis")]
    status: Literal["ok", "unavailable"]


HealthStatus = Literal["ok", "draining", "unavailable"]


class Health(msgspec.Struct, frozen=True):
    """`GET /health` (200 when `status` is `ok`, else 503)."""

    status: HealthStatus
    uptime_sec: int
    topics: Annotated[int | None, msgspec.Meta(description="null while the engine is away")]
    subscribers: int
    engine: EngineStatus
    api_key_required: Annotated[
        bool,
        msgspec.Meta(description="whether the other paths need X-API-Key (API_KEY is set)"),
    ] = False


class NodeStatus(msgspec.Struct, frozen=True):
    """One node of the cluster, as it last reported (every 2 s; `GET /nodes`)."""

    node_id: str
    connections: int
    subscribers: int
    published: Annotated[int, msgspec.Meta(description="messages this node published")]
    delivered: int
    dropped: int
    slow_consumer_disconnects: int
    p50_ms: Annotated[float | None, msgspec.Meta(description="recent latency (see /stats)")]
    p99_ms: float | None
    rss_mb: float
    updated_at: str
    is_self: bool = msgspec.field(default=False, name="self")


class NodeList(msgspec.Struct, frozen=True):
    """`GET /nodes`: every live node, this one first (`self`: true), then by node id."""

    nodes: list[NodeStatus]


class Memory(msgspec.Struct, frozen=True):
    """The process's memory."""

    rss_mb: Annotated[
        float, msgspec.Meta(description="resident memory in MB (process_resident_memory_bytes)")
    ]


class Latency(msgspec.Struct, frozen=True):
    """Publish-to-write latency over this node's recent samples (the last 10 s,
    one event write in 16)."""

    p50_ms: Annotated[float | None, msgspec.Meta(description="median, ms (null: no samples)")]
    p99_ms: Annotated[float | None, msgspec.Meta(description="99th percentile, ms")]
    samples: Annotated[int, msgspec.Meta(description="samples they were read from")]


class StatsReport(Stats, frozen=True):
    """`GET /stats`: this node's statistics."""

    memory: Memory
    latency: Latency


class ServiceInfo(msgspec.Struct, frozen=True):
    """`GET /info`: the service, its version and its settings (secrets masked as `***`)."""

    service: Literal["trio-pubsub"]
    version: str
    python: str
    node_id: str
    engine: EngineStatus
    config: Settings


def stats_report(stats: Stats, memory: Memory, latency: Latency) -> StatsReport:
    """``stats`` with the process's memory and recent latency."""
    fields: dict[str, Any] = msgspec.structs.asdict(stats)
    return StatsReport(**fields, memory=memory, latency=latency)
