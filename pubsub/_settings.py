"""Typed settings with the defaults of PROTOCOL.md: the one place that defines them.

The schema (``Settings``) is separate from loading: ``Settings.replace``
converts and checks one value at a time, ``Settings.from_env`` reads the
environment, and ``trio-pubsub serve`` layers a TOML file, the environment and
its flags on top of each other (:mod:`pubsub._cli.config`). Durations are
integer milliseconds, sizes bytes, as in the seed's environment variables; the
field names are the variable names in lower case, which may also carry the
``PUBSUB_`` prefix (``PUBSUB_PORT`` wins over ``PORT``). Each field's
``description`` is its help text (``serve --help``, ``config init`` and the
docs are generated from it), and code that needs seconds asks
:meth:`Settings.seconds` instead of dividing by 1000 itself.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Final, Literal, get_args, get_origin
from urllib.parse import urlsplit, urlunsplit

import msgspec

from ._protocol.timestamps import MAX_TTL_MS


def _doc(text: str, **constraints: Any) -> msgspec.Meta:
    return msgspec.Meta(description=text, **constraints)


Policy = Literal["drop_oldest", "disconnect"]
EngineKind = Literal["memory", "redis"]
#: Names that appear in Redis keys, channels and logs.
_NAME: Final = r"^[A-Za-z0-9._:-]{1,64}\Z"
LogLevel = Literal["debug", "info", "warning", "error", "critical"]
LogFormat = Literal["text", "json"]
#: The settings that are durations in milliseconds (see :meth:`Settings.seconds`).
Duration = Literal[
    "heartbeat_interval",
    "connection_timeout",
    "shutdown_timeout",
    "handshake_timeout",
    "close_timeout",
    "keep_alive_timeout",
    "request_timeout",
]


#: The environment names of every setting may carry this prefix; it wins over
#: the plain name when both are set.
ENV_PREFIX: Final = "PUBSUB_"


class SettingsError(ValueError):
    """A setting has a bad value; the message names the variable.

    Attributes:
        name: What the user set: the environment variable (``PORT``,
            ``PUBSUB_PORT``), or whatever a loader names it by.
        detail: What is wrong with the value (the message without the name).
    """

    def __init__(self, name: str, detail: str) -> None:
        super().__init__(f"{name}: {detail}")
        self.name = name
        self.detail = detail


class Settings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Every setting of the broker. Environment variable = field name in upper case."""

    port: Annotated[int, _doc("TCP port; 0 picks a free one and logs it", ge=0, le=65535)] = 3000
    host: Annotated[str, _doc("bind address (0.0.0.0 to expose)")] = "127.0.0.1"
    max_messages_per_topic: Annotated[
        int, _doc("replay ring per topic (last_n, resume); 0 keeps none", ge=0)
    ] = 100
    max_queue_size: Annotated[
        int, _doc("event frames queued per connection before backpressure acts", ge=1)
    ] = 1000
    max_queue_bytes: Annotated[
        int,
        _doc(
            "bytes of event frames queued per connection before backpressure acts "
            "(0 = no byte bound; one event is always accepted into an empty outbox)",
            ge=0,
        ),
    ] = 0
    backpressure_policy: Annotated[
        Policy, _doc("drop_oldest, or disconnect (SLOW_CONSUMER, close 1013)")
    ] = "drop_oldest"
    heartbeat_interval: Annotated[
        int, _doc("ms between WebSocket pings + info/ping frames", ge=1)
    ] = 30_000
    connection_timeout: Annotated[
        int, _doc("ms of silence before a client is closed (1001)", ge=1)
    ] = 60_000
    shutdown_timeout: Annotated[
        int, _doc("ms a graceful shutdown (or a closing connection) may spend flushing", ge=0)
    ] = 10_000
    max_message_size: Annotated[int, _doc("largest WebSocket message / REST body, bytes", ge=1)] = (
        1_048_576
    )
    max_json_depth: Annotated[
        int,
        _doc(
            "deepest nesting of arrays and objects in a client's JSON (frames, REST bodies)", ge=1
        ),
    ] = 100
    max_topics: Annotated[int, _doc("topics", ge=1)] = 1000
    max_subscribers_per_topic: Annotated[int, _doc("subscribers per topic", ge=1)] = 10_000
    max_connections: Annotated[int, _doc("WebSocket connections", ge=1)] = 10_000
    api_key: Annotated[str | None, _doc("require X-API-Key (REST, /ws) or ?api_key= (/ws)")] = None
    log_level: Annotated[LogLevel, _doc("debug, info, warning, error or critical")] = "info"
    log_format: Annotated[LogFormat, _doc("text, or json: one object per line")] = "text"
    # Extensions (not in the seed):
    topic_inbox_size: Annotated[
        int, _doc("commands a topic queues before publishers wait", ge=1)
    ] = 1024
    handshake_timeout: Annotated[
        int, _doc("ms a new connection may take to send its request head", ge=1)
    ] = 10_000
    close_timeout: Annotated[
        int, _doc("ms a closing WebSocket waits for the peer's close frame", ge=1)
    ] = 2_000
    keep_alive_timeout: Annotated[
        int, _doc("ms an HTTP connection may stay idle between requests", ge=1)
    ] = 5_000
    request_timeout: Annotated[
        int,
        _doc(
            "ms an HTTP client may take to send a whole request (head and body) once it "
            "has begun, and to take each response (then 408, or the connection closes)",
            ge=1,
        ),
    ] = 30_000
    auto_create_topics: Annotated[
        bool, _doc("create a topic on its first publish or subscribe (off: TOPIC_NOT_FOUND)")
    ] = False
    metrics_token: Annotated[
        str | None,
        _doc(
            "a token that opens /metrics alone (Bearer or X-Metrics-Token): "
            "a scraper needs no API key"
        ),
    ] = None
    allowed_origins: Annotated[
        str,
        _doc(
            "browser origins that may use the API, comma-separated (e.g. "
            "https://app.example.com), * for any; empty: the server's own origin only "
            "(Origin must match Host). Requests without an Origin (CLI tools) always pass",
        ),
    ] = ""
    tls_cert: Annotated[
        str | None,
        _doc("PEM certificate (chain) file: serve https:// and wss:// on PORT (needs TLS_KEY)"),
    ] = None
    tls_key: Annotated[str | None, _doc("PEM private key file of TLS_CERT")] = None
    # v1.2: message TTL.
    message_ttl: Annotated[
        int,
        _doc(
            "ms a message stays deliverable when its topic and publish set no TTL (0 = forever)",
            ge=0,
            le=MAX_TTL_MS,
        ),
    ] = 0
    # v1.2: rate limits.
    rate_limit: Annotated[
        int, _doc("publishes per second per WebSocket connection (0 = no limit)", ge=0)
    ] = 0
    rate_limit_burst: Annotated[
        int, _doc("publishes a connection may make at once (0 = RATE_LIMIT)", ge=0)
    ] = 0
    rest_rate_limit: Annotated[
        int, _doc("REST publishes per second per client address, burst alike (0 = no limit)", ge=0)
    ] = 0
    # v1.2: engine and cluster.
    engine: Annotated[
        EngineKind, _doc("memory (one process) or redis (Redis/Valkey holds topics and history)")
    ] = "memory"
    redis_url: Annotated[
        str,
        _doc(
            "Redis/Valkey for ENGINE=redis: redis://[user:password@]host:port/db "
            "(rediss:// for TLS)",
            pattern=r"^rediss?://",
        ),
    ] = "redis://127.0.0.1:6379/0"
    redis_prefix: Annotated[
        str, _doc("key prefix: clusters sharing one Redis use different ones", pattern=_NAME)
    ] = "ps"
    workers: Annotated[
        int, _doc("worker processes sharing the port (SO_REUSEPORT); > 1 needs ENGINE=redis", ge=1)
    ] = 1
    node_id: Annotated[
        Annotated[str, msgspec.Meta(pattern=_NAME)] | None,
        _doc("this process's name in a cluster (default: host-pid; workers add -wN)"),
    ] = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Settings from environment variables (``PORT``, ``MAX_QUEUE_SIZE``, ...),
        each also as ``PUBSUB_PORT``, ... (which wins when both are set).

        Unset and empty variables keep their defaults.

        Raises:
            SettingsError: a variable has a value its setting does not accept
                (named as it was set, with or without the prefix).
        """
        converted: dict[str, Any] = {}
        for name, (variable, raw) in environment(environ, FIELD_NAMES).items():
            try:
                converted[name] = convert(name, raw)
            except SettingsError as exc:
                raise SettingsError(variable, exc.detail) from None
        return msgspec.structs.replace(cls(), **converted)

    def replace(self, **values: Any) -> Settings:
        """A copy with ``values`` applied; strings are converted (``"10"`` -> 10,
        ``"INFO"`` -> ``"info"``).

        Raises:
            SettingsError: a value its setting does not accept, or an unknown name.
        """
        converted = {name: convert(name, raw) for name, raw in values.items()}
        return msgspec.structs.replace(self, **converted)

    def seconds(self, name: Duration) -> float:
        """A duration setting in seconds (the settings themselves are milliseconds)."""
        milliseconds: int = getattr(self, name)
        return milliseconds / 1000

    def public(self) -> dict[str, Any]:
        """The settings without secrets, for ``/info``, start-up logs and
        ``config check``: each secret is ``"***"`` when set, ``None`` when not."""
        values = msgspec.structs.asdict(self)
        for name in SECRETS:
            values[name] = "***" if values[name] else None
        values["redis_url"] = _without_password(self.redis_url)
        return values


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}:" if parts.username else ":"
    return urlunsplit(parts._replace(netloc=f"{user}***@{netloc}"))


_FIELD_TYPES: Final[dict[str, Any]] = {f.name: f.type for f in msgspec.structs.fields(Settings)}
FIELD_NAMES: Final = tuple(_FIELD_TYPES)
#: The settings that are secrets: masked by :meth:`Settings.public`; ``serve``
#: also reads each from a file (``API_KEY_FILE``) to keep it out of ``ps``.
SECRETS: Final = ("api_key", "metrics_token")


def _choices(field_type: Any) -> tuple[str, ...] | None:
    """The values of a ``Literal`` setting (through ``Annotated``), else None."""
    if get_origin(field_type) is Annotated:
        field_type = get_args(field_type)[0]
    if get_origin(field_type) is Literal:
        return tuple(str(value) for value in get_args(field_type))
    return None


#: Settings with a fixed set of values: matched without regard to case.
CHOICES: Final[dict[str, tuple[str, ...]]] = {
    name: choices
    for name, field_type in _FIELD_TYPES.items()
    if (choices := _choices(field_type)) is not None
}


def _expected(match: re.Match[str]) -> str:
    return "expected an integer" if match[1] == "int" else "expected a string"


def convert(name: str, raw: Any) -> Any:
    """The value of setting ``name`` for ``raw`` (a string from the environment
    or a flag, or a typed value from a file).

    Raises:
        SettingsError: named ``NAME``; an unknown setting, or a value it does not
            accept (the message lists the values a fixed-choice setting takes).
    """
    field_type = _FIELD_TYPES.get(name)
    if field_type is None:
        raise SettingsError(name.upper(), "unknown setting")
    choices = CHOICES.get(name)
    if choices is not None:
        # LOG_LEVEL=INFO is as clear as info: accept any case.
        if isinstance(raw, str) and raw.lower() in choices:
            return raw.lower()
        allowed = ", ".join(choices)
        raise SettingsError(name.upper(), f"{raw!r} is not one of {allowed} (any case)")
    try:
        value = msgspec.convert(raw, field_type, strict=False)
    except msgspec.ValidationError as exc:
        if field_type is bool or get_args(field_type)[:1] == (bool,):
            detail = "expected true or false (or 1 or 0)"
        else:
            # "Expected `int` >= 1" or "Expected `int`, got `str`": say what was given.
            detail = str(exc).removesuffix(" - at `$`").replace("`", "")
            detail = re.sub(r", got \w+$", "", detail).replace(" | null", "")
            detail = re.sub(r"^Expected (int|str)\b", _expected, detail)
        raise SettingsError(name.upper(), f"{detail}, not {raw!r}") from None
    if name == "allowed_origins":
        for entry in value.split(","):
            entry = entry.strip()
            if entry and entry != "*" and not _ORIGIN.fullmatch(entry):
                raise SettingsError(
                    name.upper(), f"{entry!r} is not an origin like https://app.example.com or *"
                )
    return value


#: What ``ALLOWED_ORIGINS`` lists: ``scheme://host[:port]`` (a trailing slash is forgiven).
_ORIGIN: Final = re.compile(r"(?i)https?://[^/\s,@?#]+/?")


def environment(environ: Mapping[str, str], names: Iterable[str]) -> dict[str, tuple[str, str]]:
    """Which of ``names`` the environment sets: name -> (variable, value).

    ``PUBSUB_NAME`` wins over ``NAME``; an empty variable counts as unset.
    """
    found: dict[str, tuple[str, str]] = {}
    for name in names:
        for variable in (ENV_PREFIX + name.upper(), name.upper()):
            if environ.get(variable, "") != "":
                found[name] = (variable, environ[variable])
                break
    return found


def describe(name: str) -> str:
    """The help text of setting ``name`` (its field's ``description``)."""
    meta = next(
        (m for m in getattr(_FIELD_TYPES[name], "__metadata__", ()) if isinstance(m, msgspec.Meta)),
        None,
    )
    assert meta is not None and meta.description, f"setting {name} has no description"
    return meta.description
