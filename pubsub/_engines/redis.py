"""The Redis/Valkey engine: topics, offsets, epochs and history shared by every node.

Keys (``P`` = ``REDIS_PREFIX``, ``T`` = topic name):

- ``P:topics`` - the registry: a hash of topic name -> incarnation;
- ``P:incarnation`` - a counter: each created topic gets the next value;
- ``P:{T}:meta`` - hash: ``inc`` (incarnation), ``offset`` (newest), ``created_at`` (ms),
  ``ttl`` (the topic's message TTL, ms; 0 or absent: none);
- ``P:{T}:log`` - stream, entry id ``<offset>-0``, fields ``m`` (the message JSON),
  ``t`` (publish time) and, for a message with a TTL, ``x`` (when it expires, epoch
  ms), trimmed to ``MAX_MESSAGES_PER_TOPIC`` (expired entries stay until trimmed;
  every read leaves them out);
- channel ``P:{T}:ev`` - one pub/sub message per published batch
  (``P <inc> <first offset> <ts> [<message>,...]``, or with TTLs
  ``E <inc> <first offset> <ts> <expires>,... [<message>,...]``) and one per delete
  (``D <inc> <last offset>``), in the order Redis ran the scripts;
- channel ``P:ctl`` - each node's own heartbeats (``H <node> <seq>``), create
  notices (``C <topic> <inc>``, for wildcard subscriptions) and delete notices
  (``D <topic> <inc>``);
- ``P:nodes`` (sorted set of node ids by last report) and ``P:node:<id>:subs``
  (hash topic -> local subscribers, expiring): cluster-wide subscriber counts.

Every change is one Lua script, so each is atomic and ordered with the others.
A publish appends to the stream *before* it advances the offset (Lua does not
roll back: a failed append must leave the offset alone), then publishes the
batch on the topic's channel; the node acknowledges once the script returned.

Redis pub/sub is at-most-once, so the feed is repaired, never trusted: each
followed topic remembers the last offset it handed to the node; an offset jump
is filled from the stream; a lost heartbeat, a full inbox or a reconnect makes
every followed topic catch up from the stream; what the stream no longer holds
is reported to the node (``on_gap``), which tells the connections with
``messages_dropped``. An epoch is the incarnation plus the Redis run id: a Redis
restart (which may have lost data) fails every resume closed.

Runs on Trio through valkey-glide (anyio); pub/sub messages arrive through its
callback on the Trio thread and are handled, in order, by one receiver task.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import os
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar
from urllib.parse import unquote, urlsplit

import msgspec
import trio
from glide import (
    AdvancedGlideClientConfiguration,
    BackoffStrategy,
    ClosingError,
    GlideClient,
    GlideClientConfiguration,
    Logger,
    LogLevel,
    NodeAddress,
    RequestError,
    Script,
    ServerCredentials,
)
from glide import ConnectionError as GlideConnectionError
from glide import TimeoutError as GlideTimeoutError

from .._core.engine import Feed, History, Publication, Published, TopicInfo, unexpired
from .._protocol import timestamps
from .._protocol.errors import (
    InternalError,
    LimitExceeded,
    TopicExists,
    TopicNotFound,
    Unavailable,
)
from .._protocol.frames import Message
from .._protocol.timestamps import format_ts, now_ms

log = logging.getLogger("pubsub.redis")

T = TypeVar("T")

#: Seconds between heartbeats on the control channel; three missed ones (or a
#: missing sequence number) make every followed topic catch up from its stream.
HEARTBEAT: Final = 0.5
#: Every this many heartbeats the node also asks Redis for its run id.
RUN_ID_EVERY: Final = 4
#: Seconds a node stays subscribed to a topic's channel after its last local
#: subscriber left (a quick resubscribe costs nothing then).
LINGER: Final = 1.0
#: Seconds between this node's subscriber-count reports (they expire after 5 s).
REPORT_EVERY: Final = 2.0
REPORT_TTL_MS: Final = 5000
#: Pub/sub messages queued for the receiver before it resyncs instead.
INBOX: Final = 65536
#: Seconds between audits of the followed topics' newest offsets: a topic whose
#: feed stayed behind for a whole interval catches up from its stream (a reconnect
#: that lost messages but no heartbeat is noticed this way).
AUDIT_EVERY: Final = 2.0
#: The receiver's inbox "channel" that asks it to catch one topic up.
_CATCH_UP: Final = b"\x00catch-up"
#: Messages held per topic while its feed is not ready (catching up).
MAX_PENDING: Final = 10_000
#: "Up to the newest offset" for a stream range read.
_NEWEST: Final = 2**62

_messages_decoder: Final = msgspec.json.Decoder(list[Message])
_encode: Final = msgspec.json.Encoder().encode


def _lua(code: str) -> Script:
    return Script(code)  # type: ignore[no-untyped-call]  # glide's Script is unannotated


_CREATE: Final = _lua(
    """
-- KEYS: meta, registry, incarnation counter
-- ARGV: name, created_at, max_topics, token, message ttl, control channel
if redis.call('EXISTS', KEYS[1]) == 1 then return {0} end
if redis.call('HLEN', KEYS[2]) >= tonumber(ARGV[3]) then return {-1} end
-- The random token keeps incarnations apart even if Redis lost the counter.
local inc = redis.call('INCR', KEYS[3]) .. '.' .. ARGV[4]
redis.call('HSET', KEYS[1], 'inc', inc, 'offset', 0, 'created_at', ARGV[2], 'ttl', ARGV[5])
redis.call('HSET', KEYS[2], ARGV[1], inc)
redis.call('PUBLISH', ARGV[6], 'C ' .. ARGV[1] .. ' ' .. inc)
return {1, inc}
"""
)

_PUBLISH: Final = _lua(
    """
-- KEYS: meta, log
-- ARGV: max stored, ts, channel, now ms, per-message TTLs ('' or 'ms,ms,...'; 0: the
-- topic's), message JSON...
local meta = redis.call('HMGET', KEYS[1], 'inc', 'offset', 'ttl')
local inc = meta[1]
if not inc then return {0} end
local offset = tonumber(meta[2])
local default = tonumber(meta[3] or 0)
local keep = tonumber(ARGV[1])
local n = #ARGV - 5
local expires = nil
if default > 0 or ARGV[5] ~= '' then
  local now = tonumber(ARGV[4])
  expires = {}
  local i = 0
  for ttl in string.gmatch(ARGV[5], '%d+') do
    i = i + 1
    local t = tonumber(ttl)
    if t == 0 then t = default end
    expires[i] = t > 0 and (now + t) or 0
  end
  for j = i + 1, n do expires[j] = default > 0 and (now + default) or 0 end
end
-- Append first: Lua does not roll back, and a failed XADD must leave the offset.
if keep > 0 then
  for i = 1, n do
    if expires and expires[i] > 0 then
      redis.call('XADD', KEYS[2], 'MAXLEN', keep, (offset + i) .. '-0',
        'm', ARGV[5 + i], 't', ARGV[2], 'x', expires[i])
    else
      redis.call('XADD', KEYS[2], 'MAXLEN', keep, (offset + i) .. '-0',
        'm', ARGV[5 + i], 't', ARGV[2])
    end
  end
end
redis.call('HSET', KEYS[1], 'offset', offset + n)
local body = ' [' .. table.concat(ARGV, ',', 6) .. ']'
if expires then
  redis.call('PUBLISH', ARGV[3], 'E ' .. inc .. ' ' .. (offset + 1) .. ' ' .. ARGV[2] .. ' '
    .. table.concat(expires, ',') .. body)
else
  redis.call('PUBLISH', ARGV[3], 'P ' .. inc .. ' ' .. (offset + 1) .. ' ' .. ARGV[2] .. body)
end
return {offset + 1, inc}
"""
)

_DELETE: Final = _lua(
    """
-- KEYS: meta, log, registry; ARGV: name, channel, control channel
local inc = redis.call('HGET', KEYS[1], 'inc')
if not inc then return 0 end
local offset = redis.call('HGET', KEYS[1], 'offset')
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('HDEL', KEYS[3], ARGV[1])
-- After every earlier publish of the topic (scripts run one at a time).
redis.call('PUBLISH', ARGV[2], 'D ' .. inc .. ' ' .. offset)
redis.call('PUBLISH', ARGV[3], 'D ' .. ARGV[1] .. ' ' .. inc)
return 1
"""
)

# Shared by the reading scripts: the run id makes the epoch.
_RUN_ID: Final = "string.match(redis.call('INFO', 'server'), 'run_id:(%x+)')"

_HISTORY: Final = _lua(
    f"""
-- KEYS: meta, log; ARGV: 'last' n | 'since' offset max | 'range' from to
local meta = redis.call('HMGET', KEYS[1], 'inc', 'offset')
if not meta[1] then return {{0}} end
local offset = tonumber(meta[2])
local entries = {{}}
if ARGV[1] == 'last' then
  local n = tonumber(ARGV[2])
  if n > 0 and offset > 0 then
    entries = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', n)
  end
elseif ARGV[1] == 'since' then
  local since = tonumber(ARGV[2])
  if since < offset and offset - since <= tonumber(ARGV[3]) then
    entries = redis.call('XRANGE', KEYS[2], (since + 1) .. '-0', '+')
  end
else
  local from = tonumber(ARGV[2])
  local to = math.min(tonumber(ARGV[3]), offset)
  if from <= to then entries = redis.call('XRANGE', KEYS[2], from .. '-0', to .. '-0') end
end
return {{1, meta[1], offset, {_RUN_ID}, entries}}
"""
)

_TOPIC_FIELDS: Final = """
local function topic_info(prefix, name, now, nodes)
  local meta = redis.call('HMGET', prefix .. ':{' .. name .. '}:meta',
    'inc', 'offset', 'created_at', 'ttl')
  if not meta[1] then return nil end
  local stored = redis.call('XLEN', prefix .. ':{' .. name .. '}:log')
  local subscribers = 0
  for _, node in ipairs(nodes) do
    local count = redis.call('HGET', prefix .. ':node:' .. node .. ':subs', name)
    if count then subscribers = subscribers + tonumber(count) end
  end
  return {name, meta[1], tonumber(meta[2]), tonumber(meta[3]), stored, subscribers,
    tonumber(meta[4] or 0)}
end
"""

_TOPICS: Final = _lua(
    f"""
-- ARGV: prefix, now (ms), report ttl (ms), topic name or '' for all
{_TOPIC_FIELDS}
local prefix = ARGV[1]
local nodes = redis.call('ZRANGEBYSCORE', prefix .. ':nodes',
  tonumber(ARGV[2]) - tonumber(ARGV[3]), '+inf')
local names = {{ARGV[4]}}
if ARGV[4] == '' then names = redis.call('HKEYS', prefix .. ':topics') end
local out = {{}}
for _, name in ipairs(names) do
  local info = topic_info(prefix, name, ARGV[2], nodes)
  if info then table.insert(out, info) end
end
return {{{_RUN_ID}, out}}
"""
)

_NODES: Final = _lua(
    """
-- ARGV: prefix, now (ms), report ttl (ms): the status of every node that reported lately
local nodes = redis.call('ZRANGEBYSCORE', ARGV[1] .. ':nodes',
  tonumber(ARGV[2]) - tonumber(ARGV[3]), '+inf')
local out = {}
for _, node in ipairs(nodes) do
  local status = redis.call('GET', ARGV[1] .. ':node:' .. node .. ':status')
  if status then table.insert(out, status) end
end
return out
"""
)

_OFFSETS: Final = _lua(
    """
-- KEYS: meta keys; the newest offset of each topic (-1: gone)
local out = {}
for i, key in ipairs(KEYS) do
  out[i] = tonumber(redis.call('HGET', key, 'offset') or -1)
end
return out
"""
)

_REPORT: Final = _lua(
    """
-- KEYS: node subs hash, nodes set, node status; ARGV: node id, now, ttl ms,
-- status ('' for none), topic, count, ...
redis.call('DEL', KEYS[1])
for i = 5, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
if ARGV[4] ~= '' then redis.call('SET', KEYS[3], ARGV[4], 'PX', ARGV[3]) end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', tonumber(ARGV[2]) - 10 * tonumber(ARGV[3]))
return 1
"""
)


def parse_redis_url(url: str) -> tuple[NodeAddress, bool, int, ServerCredentials | None]:
    """``redis[s]://[user:password@]host[:port][/db]`` -> address, TLS, database, credentials."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        raise ValueError(f"REDIS_URL must start with redis:// or rediss://, not {url!r}")
    database = int(parts.path.strip("/") or 0)
    credentials = None
    if parts.password is not None or parts.username:
        credentials = ServerCredentials(
            password=unquote(parts.password or ""), username=unquote(parts.username or "") or None
        )
    address = NodeAddress(parts.hostname or "127.0.0.1", parts.port or 6379)
    return address, parts.scheme == "rediss", database, credentials


class _Follower:
    """This node's feed of one topic."""

    __slots__ = ("inc", "offset", "pending", "ready", "seeded", "unsubscribe_at")

    def __init__(self) -> None:
        #: The incarnation and the last offset handed to the node (once seeded).
        self.inc = b""
        self.offset = 0
        #: Set by ``follow`` once it read where the topic stands.
        self.seeded = False
        #: False until seeded by ``follow``, and while catching up after a break:
        #: messages wait in ``pending`` meanwhile.
        self.ready = False
        self.pending: list[bytes] = []
        #: When to unsubscribe (the last local subscriber left), or None.
        self.unsubscribe_at: float | None = None


class RedisEngine:
    """The engine of a cluster: Redis or Valkey holds what every node shares.

    Args:
        url: ``REDIS_URL``.
        prefix: ``REDIS_PREFIX``.
        node_id: This node's name (heartbeats, subscriber reports).
        max_topics: ``MAX_TOPICS`` (cluster-wide).
        max_messages: ``MAX_MESSAGES_PER_TOPIC``: the stream length per topic.
        timeout: Seconds a Redis call may take before it is ``UNAVAILABLE``.
    """

    kind: Final = "redis"
    #: Every call waits for Redis.
    immediate: Final = False

    def __init__(
        self,
        *,
        url: str,
        prefix: str,
        node_id: str,
        max_topics: int,
        max_messages: int,
        timeout: float = 1.0,
    ) -> None:
        self._address, self._tls, self._database, self._credentials = parse_redis_url(url)
        self._prefix = prefix
        self._node_id = node_id
        #: This node's status for ``/nodes`` (set by the server), sent with each report.
        self._status: Callable[[], bytes] | None = None
        self._max_topics = max_topics
        self._max_messages = max_messages
        self._timeout = timeout
        self._control = f"{prefix}:ctl"
        self._feed: Feed | None = None
        self._client: GlideClient | None = None
        self._subscriber: GlideClient | None = None
        self._followers: dict[str, _Follower] = {}
        self._subscriptions = trio.Lock()
        self._inbox_send, self._inbox = trio.open_memory_channel[tuple[bytes, bytes]](INBOX)
        #: The receiver must make every followed topic catch up from its stream.
        self._resync_all = False
        self._available = False
        self._run_id = ""
        self._heartbeat_seen = 0
        self._heartbeat_at = 0.0

    # ------------------------------------------------------------------ names

    def _key(self, topic: str, kind: str) -> str:
        return f"{self._prefix}:{{{topic}}}:{kind}"

    def _channel(self, topic: str) -> str:
        return self._key(topic, "ev")

    def _topic_of(self, channel: bytes) -> str | None:
        text = channel.decode()
        head, tail = f"{self._prefix}:{{", "}:ev"
        if text.startswith(head) and text.endswith(tail):
            return text[len(head) : -len(tail)]
        return None

    # ---------------------------------------------------------------- running

    @property
    def available(self) -> bool:
        return self._available

    def _configuration(self, subscriber: bool) -> GlideClientConfiguration:
        pubsub = None
        if subscriber:
            pubsub = GlideClientConfiguration.PubSubSubscriptions(
                channels_and_patterns={
                    GlideClientConfiguration.PubSubChannelModes.Exact: {self._control}
                },
                callback=self._on_message,
                context=None,
            )
        timeout_ms = int(self._timeout * 1000)
        return GlideClientConfiguration(
            [self._address],
            use_tls=self._tls,
            credentials=self._credentials,
            database_id=self._database,
            request_timeout=timeout_ms,
            reconnect_strategy=BackoffStrategy(num_of_retries=8, factor=50, exponent_base=2),
            client_name=f"trio-pubsub:{self._node_id}",
            pubsub_subscriptions=pubsub,
            lazy_connect=True,
            advanced_config=AdvancedGlideClientConfiguration(
                connection_timeout=timeout_ms, pubsub_reconciliation_interval=500
            ),
        )

    async def run(
        self, feed: Feed, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        # glide logs every reconnect attempt to stderr itself; the engine reports
        # what matters (unavailable, back, caught up) through logging instead.
        Logger.set_logger_config(LogLevel.OFF)
        self._feed = feed
        self._client = await GlideClient.create(self._configuration(subscriber=False))
        self._subscriber = await GlideClient.create(self._configuration(subscriber=True))
        try:
            async with trio.open_nursery() as nursery:
                await self._check()  # so /health is right from the start
                nursery.start_soon(self._receive)
                nursery.start_soon(self._watch)
                nursery.start_soon(self._linger)
                nursery.start_soon(self._report)
                nursery.start_soon(self._audit)
                task_status.started()
        finally:
            self._feed = None
            with trio.CancelScope(shield=True), trio.move_on_after(self._timeout):
                await self._subscriber.close()
                await self._client.close()

    async def _call(self, call: Awaitable[T]) -> T:
        """One Redis call; anything that says Redis is unreachable is ``UNAVAILABLE``."""
        try:
            with trio.fail_after(self._timeout + 0.5):
                return await call
        except (GlideConnectionError, GlideTimeoutError, ClosingError, trio.TooSlowError) as exc:
            self._went_away(exc)
            raise Unavailable(f"Redis cannot be reached: {exc or 'timed out'}") from None
        except RequestError as exc:
            text = str(exc)
            if any(word in text for word in ("connect", "Connection", "IoError", "LOADING")):
                self._went_away(exc)
                raise Unavailable(f"Redis cannot be reached: {text}") from None
            log.error("Redis refused a call: %s", text)
            raise InternalError(f"Redis refused the call: {text}") from None

    def _went_away(self, exc: BaseException) -> None:
        if self._available:
            log.warning("Redis unavailable: %s", exc or "timed out")
        self._available = False

    async def _script(self, script: Script, keys: list[str], args: list[Any]) -> Any:
        assert self._client is not None
        return await self._call(
            self._client.invoke_script(
                script, keys=keys, args=[a if isinstance(a, bytes) else str(a) for a in args]
            )
        )

    # ---------------------------------------------------------------- registry

    async def create_topic(self, name: str, message_ttl_ms: int = 0) -> TopicInfo:
        created_at = now_ms()
        result = await self._script(
            _CREATE,
            [self._key(name, "meta"), f"{self._prefix}:topics", f"{self._prefix}:incarnation"],
            [
                name,
                created_at,
                self._max_topics,
                os.urandom(3).hex(),
                message_ttl_ms,
                self._control,
            ],
        )
        if result[0] == 0:
            raise TopicExists(f"topic {name!r} already exists")
        if result[0] == -1:
            raise LimitExceeded(f"the broker has the maximum of {self._max_topics} topics")
        epoch = self._epoch(result[1], self._run_id)
        return TopicInfo(name, epoch, created_at, 0, 0, 0, message_ttl_ms)

    async def delete_topic(self, name: str) -> None:
        deleted = await self._script(
            _DELETE,
            [self._key(name, "meta"), self._key(name, "log"), f"{self._prefix}:topics"],
            [name, self._channel(name), self._control],
        )
        if not deleted:
            raise TopicNotFound(f"topic {name!r} does not exist")
        follower = self._followers.get(name)
        if follower is not None and follower.unsubscribe_at is not None:
            # Lingering (no local subscribers): a re-created topic followed here must
            # be seeded afresh, not fed the old incarnation's tail.
            follower.seeded = follower.ready = False
            follower.pending.clear()

    async def topic(self, name: str) -> TopicInfo:
        infos = await self._topics(name)
        if not infos:
            raise TopicNotFound(f"topic {name!r} does not exist")
        return infos[0]

    async def topics(self) -> list[TopicInfo]:
        return sorted(await self._topics(""), key=lambda info: info.name)

    async def topic_count(self) -> int:
        assert self._client is not None
        return int(await self._call(self._client.hlen(f"{self._prefix}:topics")))

    def report_status(self, status: Callable[[], bytes]) -> None:
        self._status = status

    async def node_statuses(self) -> list[bytes]:
        rows = await self._script(_NODES, [], [self._prefix, now_ms(), REPORT_TTL_MS])
        return [bytes(row) for row in rows]

    async def topic_names(self) -> list[str]:
        assert self._client is not None
        names = await self._call(self._client.hkeys(f"{self._prefix}:topics"))
        return [bytes(name).decode() for name in names]

    async def _topics(self, name: str) -> list[TopicInfo]:
        run_id, rows = await self._script(
            _TOPICS, [], [self._prefix, now_ms(), REPORT_TTL_MS, name]
        )
        return [
            TopicInfo(
                row[0].decode(),
                self._epoch(row[1], run_id),
                int(row[3]),
                int(row[2]),
                int(row[4]),
                int(row[5]),
                int(row[6]),
            )
            for row in rows
        ]

    @staticmethod
    def _epoch(inc: bytes | int, run_id: bytes | str) -> str:
        inc_text = inc.decode() if isinstance(inc, bytes) else str(inc)
        run = run_id.decode() if isinstance(run_id, bytes) else run_id
        return f"{inc_text}-{run[:12]}"

    # ---------------------------------------------------------------- messages

    async def publish(
        self, topic: str, messages: list[Message], ttls: list[int] | None = None
    ) -> Published:
        now = timestamps.now_ms()
        ts = format_ts(now)
        own = ",".join(map(str, ttls)) if ttls else ""
        result = await self._script(
            _PUBLISH,
            [self._key(topic, "meta"), self._key(topic, "log")],
            [self._max_messages, ts, self._channel(topic), now, own, *map(_encode, messages)],
        )
        if result[0] == 0:
            raise TopicNotFound(f"topic {topic!r} does not exist")
        return Published(int(result[0]), self._epoch(result[1], self._run_id), ts)

    async def history(
        self,
        topic: str,
        *,
        last_n: int = 0,
        since_offset: int | None = None,
        epoch: str | None = None,
    ) -> History:
        if since_offset is not None:
            args: list[Any] = ["since", since_offset, self._max_messages]
        else:
            args = ["last", min(last_n, self._max_messages)]
        result = await self._script(
            _HISTORY, [self._key(topic, "meta"), self._key(topic, "log")], args
        )
        if result[0] == 0:
            raise TopicNotFound(f"topic {topic!r} does not exist")
        _, inc, offset, run_id, entries = result
        current = self._epoch(inc, run_id)
        publications = [_publication(entry) for entry in entries]
        if since_offset is None:
            publications.reverse()  # XREVRANGE: newest first
            kept, expired = unexpired(publications, timestamps.now_ms())
            if expired and len(kept) < last_n < self._max_messages and len(publications) == last_n:
                # Expired entries took places of the newest last_n: look through all.
                found = await self.history(topic, last_n=self._max_messages)
                return History(found.offset, found.epoch, None, found.publications[-last_n:])
            return History(offset, current, None, kept[-last_n:] if last_n else [])
        missing = offset - since_offset
        recovered = (
            epoch == current
            and missing >= 0
            and len(publications) == missing
            and (not publications or publications[0].offset == since_offset + 1)
        )
        if not recovered:
            return History(offset, current, False, [])
        kept, expired = unexpired(publications, timestamps.now_ms())
        return History(offset, current, True, kept, expired)

    # -------------------------------------------------------------- the feed

    async def follow(self, topic: str) -> int | None:
        follower = self._followers.get(topic)
        if follower is not None and follower.seeded:
            follower.unsubscribe_at = None
            return None  # still subscribed: the feed goes on without a break
        assert self._subscriber is not None
        async with self._subscriptions:
            follower = self._followers.get(topic)
            if follower is None:
                follower = self._followers[topic] = _Follower()
            follower.unsubscribe_at = None
            try:
                await self._call(
                    self._subscriber.subscribe(
                        {self._channel(topic)}, timeout_ms=int(self._timeout * 1000)
                    )
                )
                # Subscribed first, then read where the topic stands: nothing
                # published after this read can be missed.
                result = await self._script(
                    _HISTORY, [self._key(topic, "meta"), self._key(topic, "log")], ["last", 0]
                )
            except BaseException:
                follower.unsubscribe_at = trio.current_time()
                raise
            if result[0] == 0:
                follower.unsubscribe_at = trio.current_time()
                raise TopicNotFound(f"topic {topic!r} does not exist")
            follower.inc = bytes(result[1])
            follower.offset = int(result[2])
            follower.seeded = follower.ready = True
        self._poke(topic)
        return follower.offset

    def unfollow(self, topic: str) -> None:
        follower = self._followers.get(topic)
        if follower is not None:
            follower.unsubscribe_at = trio.current_time() + LINGER

    def _on_message(self, message: Any, context: object) -> None:
        """glide's pub/sub callback (on the Trio thread): queue for the receiver."""
        self._send_inbox(bytes(message.channel), bytes(message.message))

    def _poke(self, topic: str) -> None:
        """Make the receiver hand over what waited for ``topic`` to be ready."""
        self._send_inbox(self._channel(topic).encode(), b"")

    def _send_inbox(self, channel: bytes, data: bytes) -> None:
        try:
            self._inbox_send.send_nowait((channel, data))
        except trio.WouldBlock:
            self._resync_all = True  # the receiver is far behind: it catches up anyway

    async def _receive(self) -> None:
        """The one task that hands the feed to the node, in order."""
        async for channel, data in self._inbox:
            try:
                if self._resync_all:
                    await self._catch_up_all()
                if channel == self._control.encode():
                    self._on_control(data)
                    continue
                if channel == _CATCH_UP:
                    lagging = self._followers.get(data.decode())
                    if lagging is not None and lagging.seeded:
                        await self._catch_up(data.decode(), lagging)
                    continue
                topic = self._topic_of(channel)
                follower = self._followers.get(topic) if topic else None
                if topic is None or follower is None:
                    continue
                if not follower.ready:
                    if data:
                        self._hold(follower, data)
                    continue
                pending, follower.pending = follower.pending, []
                for waiting in pending:
                    await self._apply(topic, follower, waiting)
                if data:
                    await self._apply(topic, follower, data)
            except (Unavailable, InternalError):
                # Redis went away (or refused) while repairing: the watcher has the
                # receiver catch every followed topic up later.
                self._resync_all = True
            except Exception:
                # A bug or a message this node cannot read must not take the node down.
                log.exception("the Redis feed failed on %r: catching up", channel)
                self._resync_all = True

    def _hold(self, follower: _Follower, data: bytes) -> None:
        if len(follower.pending) >= MAX_PENDING:
            # Everything held is in the stream: catching up reads it again.
            follower.pending.clear()
        follower.pending.append(data)

    async def _apply(self, topic: str, follower: _Follower, data: bytes) -> None:
        """Hand one channel message to the node, repairing a gap before it."""
        if data[:1] == b"D":
            _, inc, final = data.split(b" ")
            if inc == follower.inc:
                # What the feed missed before the delete is gone with the stream.
                self._report_gap(topic, follower, int(final) + 1)
                self._forget(topic)
            return  # else: the delete of an incarnation this node did not follow
        inc, publications = _parse_batch(data)
        if inc != follower.inc:
            # An older incarnation's message still on its way, or ours was deleted
            # and the topic re-created: the stream says which.
            await self._catch_up(topic, follower)
            return
        first, last = publications[0].offset, publications[-1].offset
        if last <= follower.offset:
            return  # already handed over (repaired from the stream)
        if first > follower.offset + 1:
            follower.ready = False
            follower.pending.insert(0, data)
            await self._catch_up(topic, follower, first - 1)
            return
        self._hand_over(topic, follower, publications)

    def _hand_over(
        self,
        topic: str,
        follower: _Follower,
        publications: list[Publication],
        *,
        repaired: bool = False,
    ) -> None:
        """Publications after the follower's offset go to the node, in order."""
        assert self._feed is not None
        fresh = [p for p in publications if p.offset > follower.offset]
        if fresh:
            follower.offset = fresh[-1].offset
            self._feed.on_publications(topic, fresh, repaired=repaired)

    def _report_gap(self, topic: str, follower: _Follower, before: int) -> None:
        """Offsets after the follower's and before ``before`` are lost for good."""
        missed = before - follower.offset - 1
        if missed > 0 and self._feed is not None:
            self._feed.on_gap(topic, follower.offset, missed)
            follower.offset = before - 1

    async def _catch_up(self, topic: str, follower: _Follower, until: float = math.inf) -> None:
        """Read what the feed missed from the stream and hand it over; then the
        messages held meanwhile. ``until``: the newest offset known to be needed."""
        follower.ready = False
        # The stream holds at most MAX_MESSAGES_PER_TOPIC entries: this read is bounded.
        upper = _NEWEST if until == math.inf else int(until)
        result = await self._script(
            _HISTORY,
            [self._key(topic, "meta"), self._key(topic, "log")],
            ["range", follower.offset + 1, max(upper, follower.offset)],
        )
        newest = int(result[2]) if result[0] else 0
        if result[0] == 0 or bytes(result[1]) != follower.inc or newest < follower.offset:
            # Deleted (and maybe re-created) meanwhile, or Redis lost data: offsets
            # this node handed over would be reused. Either way the incarnation the
            # subscribers knew is gone: hand over what is held of it, then say so.
            self._release_held(topic, follower)
            self._forget(topic)
            return
        publications = [_publication(entry) for entry in result[4]]
        target = newest if until == math.inf else min(int(until), newest)
        if target > follower.offset:
            self._report_gap(
                topic, follower, publications[0].offset if publications else target + 1
            )
            # Owed to subscribers that kept up: not subject to their queue bounds.
            self._hand_over(topic, follower, publications, repaired=True)
            follower.offset = max(follower.offset, target)
        follower.ready = True
        pending, follower.pending = follower.pending, []
        for waiting in pending:
            await self._apply(topic, follower, waiting)

    def _release_held(self, topic: str, follower: _Follower) -> None:
        """The stream is gone: the held messages of the followed incarnation are the
        only copy left of them; hand them over (gaps reported), in order."""
        pending, follower.pending = follower.pending, []
        for data in pending:
            if data[:1] == b"D":
                continue
            inc, publications = _parse_batch(data)
            if inc == follower.inc and publications[-1].offset > follower.offset:
                self._report_gap(topic, follower, publications[0].offset)
                self._hand_over(topic, follower, publications)

    async def _catch_up_all(self) -> None:
        self._resync_all = False
        if self._feed is not None:
            self._feed.on_topics_created(None)  # create notices may be lost too
        for topic, follower in list(self._followers.items()):
            if self._followers.get(topic) is follower and follower.seeded:
                await self._catch_up(topic, follower)
        if self._followers:
            log.info("caught up %d followed topics from their streams", len(self._followers))

    def _forget(self, topic: str) -> None:
        """The followed incarnation is gone: tell the node, stop following."""
        follower = self._followers.get(topic)
        if follower is not None:
            follower.seeded = follower.ready = False
            follower.pending.clear()
            follower.unsubscribe_at = trio.current_time()
        if self._feed is not None:
            self._feed.on_topic_deleted(topic)

    def _on_control(self, data: bytes) -> None:
        parts = data.split(b" ")
        if len(parts) != 3:
            log.debug("ignoring a control message this node does not know: %r", data[:80])
            return
        kind, first, second = parts
        if kind == b"H" and first.decode() == self._node_id:
            seq = int(second)
            if self._heartbeat_seen and seq != self._heartbeat_seen + 1:
                self._resync_all = True  # heartbeats were lost: so may messages
            self._heartbeat_seen = seq
            self._heartbeat_at = trio.current_time()
        elif kind == b"C":
            if self._feed is not None:
                self._feed.on_topics_created([first.decode()])
        elif kind == b"D":
            topic = first.decode()
            if topic not in self._followers and self._feed is not None:
                # A node that does not follow the topic may still hold its actor.
                self._feed.on_topic_deleted(topic)

    # ------------------------------------------------------------ housekeeping

    async def _check(self) -> bool:
        """Ask Redis who it is; notice it going away and coming back."""
        assert self._client is not None
        was = self._available
        try:
            info = await self._call(self._client.custom_command(["INFO", "server"]))
        except (Unavailable, InternalError):
            return False
        text = bytes(info).decode() if isinstance(info, bytes | bytearray) else str(info)
        run_id = next(
            (
                line.split(":", 1)[1].strip()
                for line in text.splitlines()
                if line.startswith("run_id:")
            ),
            "",
        )
        restarted = bool(self._run_id) and run_id != self._run_id
        self._run_id = run_id
        self._available = True
        if not was or restarted:
            if self._run_id and (restarted or self._heartbeat_at):
                log.warning("Redis is back%s", " (restarted)" if restarted else "")
            self._resync_all = True
            self._poke_control()
            if self._subscriber is not None:
                # Connect the pub/sub client now (it connects lazily): the control
                # channel's delete notices and heartbeats must arrive from the start.
                with contextlib.suppress(Unavailable, InternalError):
                    await self._call(self._subscriber.ping())
        return True

    def _poke_control(self) -> None:
        self._send_inbox(self._control.encode(), b"X - -")

    async def _watch(self) -> None:
        """Heartbeats on the control channel, and Redis's availability."""
        assert self._client is not None
        for seq in itertools.count(1):
            await trio.sleep(HEARTBEAT)
            # Who Redis is (a restart changes its run id) is asked while it is
            # unavailable, and every few heartbeats; the heartbeat itself is the
            # probe in between.
            if (not self._available or seq % RUN_ID_EVERY == 0) and not await self._check():
                continue
            if self._resync_all:
                self._poke_control()  # a catch-up failed: the receiver tries again
            try:
                await self._call(self._client.publish(f"H {self._node_id} {seq}", self._control))
            except (Unavailable, InternalError):
                continue
            silent = trio.current_time() - self._heartbeat_at
            if self._heartbeat_at and silent > 3 * HEARTBEAT and self._followers:
                log.warning("own heartbeats missing for %.1f s: catching up", silent)
                self._heartbeat_at = trio.current_time()
                self._resync_all = True
                self._poke_control()

    async def _audit(self) -> None:
        """Catch a feed that lost messages (or a delete) without anyone noticing: a
        followed topic whose newest offset differs from the feed's at one audit, while
        the feed has not moved by the next one, catches up from its stream (which
        also finds a topic that is gone)."""
        stuck: dict[str, int] = {}
        while True:
            await trio.sleep(AUDIT_EVERY)
            topics = [topic for topic, follower in self._followers.items() if follower.ready]
            if not topics or not self._available:
                stuck = {}
                continue
            try:
                newest = await self._script(_OFFSETS, [self._key(t, "meta") for t in topics], [])
            except (Unavailable, InternalError):
                continue
            suspects: dict[str, int] = {}
            for topic, offset in zip(topics, newest, strict=True):
                follower = self._followers.get(topic)
                if follower is None or offset == follower.offset:
                    continue
                if stuck.get(topic) == follower.offset:
                    log.warning("feed of %r disagrees with its stream: catching up", topic)
                    self._send_inbox(_CATCH_UP, topic.encode())
                else:
                    suspects[topic] = follower.offset
            stuck = suspects

    async def _linger(self) -> None:
        """Unsubscribe from topics whose last local subscriber left a while ago."""
        assert self._subscriber is not None
        while True:
            await trio.sleep(LINGER / 4)
            now = trio.current_time()
            for topic, follower in list(self._followers.items()):
                if follower.unsubscribe_at is None or follower.unsubscribe_at > now:
                    continue
                async with self._subscriptions:
                    if self._followers.get(topic) is not follower:
                        continue
                    if follower.unsubscribe_at is None or follower.unsubscribe_at > now:
                        continue
                    del self._followers[topic]
                    # On failure the subscription is gone with the connection anyway.
                    with contextlib.suppress(Unavailable, InternalError):
                        await self._call(
                            self._subscriber.unsubscribe(
                                {self._channel(topic)}, timeout_ms=int(self._timeout * 1000)
                            )
                        )

    async def _report(self) -> None:
        """This node's subscriber counts, for cluster-wide ``/topics``, and its
        status (``/nodes``)."""
        while True:
            feed = self._feed
            if feed is not None and self._available:
                counts = [
                    item
                    for topic, count in feed.subscriber_counts().items()
                    if count
                    for item in (topic, count)
                ]
                status = self._status() if self._status is not None else b""
                with contextlib.suppress(Unavailable, InternalError):
                    await self._script(
                        _REPORT,
                        [
                            f"{self._prefix}:node:{self._node_id}:subs",
                            f"{self._prefix}:nodes",
                            f"{self._prefix}:node:{self._node_id}:status",
                        ],
                        [self._node_id, now_ms(), REPORT_TTL_MS, status, *counts],
                    )
            await trio.sleep(REPORT_EVERY)


def _parse_batch(data: bytes) -> tuple[bytes, list[Publication]]:
    """A channel message ``P <inc> <first offset> <ts> [<message>,...]`` or
    ``E <inc> <first offset> <ts> <expires>,... [<message>,...]``."""
    if data[:1] == b"E":
        _, inc, first_text, ts, expiries, body = data.split(b" ", 5)
        first = int(first_text)
        ts_text = ts.decode()
        messages = _messages_decoder.decode(body)
        return inc, [
            Publication(first + index, ts_text, message, None, int(expires))
            for index, (message, expires) in enumerate(
                zip(messages, expiries.split(b","), strict=True)
            )
        ]
    _, inc, first_text, ts, body = data.split(b" ", 4)
    first = int(first_text)
    ts_text = ts.decode()
    messages = _messages_decoder.decode(body)
    return inc, [
        Publication(first + index, ts_text, message) for index, message in enumerate(messages)
    ]


def _publication(entry: Any) -> Publication:
    """A stream entry ``[b"<offset>-0", [b"m", message, b"t", ts]]`` as a Publication."""
    entry_id, fields = entry
    values = dict(zip(fields[::2], fields[1::2], strict=True))
    offset = int(bytes(entry_id).split(b"-", 1)[0])
    message = msgspec.json.decode(values[b"m"], type=Message)
    expires = values.get(b"x")
    return Publication(
        offset, bytes(values[b"t"]).decode(), message, None, int(expires) if expires else 0
    )
