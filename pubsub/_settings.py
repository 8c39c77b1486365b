"""Typed settings with the defaults of PROTOCOL.md.

The schema (``Settings``) is separate from loading (``Settings.from_env``,
``Settings.replace``). Durations are integer milliseconds, sizes bytes, as in
the seed's environment variables; the field names are the variable names in
lower case.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Final, Literal

import msgspec

Positive = Annotated[int, msgspec.Meta(ge=1)]
NonNegative = Annotated[int, msgspec.Meta(ge=0)]
Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]
Policy = Literal["drop_oldest", "disconnect"]
LogLevel = Literal["debug", "info", "warning", "error", "critical"]
LogFormat = Literal["text", "json"]


class SettingsError(ValueError):
    """A setting has a bad value; the message names the variable."""

    def __init__(self, name: str, detail: str) -> None:
        super().__init__(f"{name}: {detail}")
        self.name = name


class Settings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Every setting of the broker. Environment variable = field name in upper case."""

    #: TCP port; 0 picks a free one (the bound port is logged).
    port: Port = 3000
    #: Bind address; 0.0.0.0 exposes the broker beyond this machine.
    host: str = "127.0.0.1"
    #: Replay ring size per topic (messages kept for ``last_n`` and resume); 0 keeps none.
    max_messages_per_topic: NonNegative = 100
    #: Frames queued per connection before the backpressure policy acts.
    max_queue_size: Positive = 1000
    #: What a full outbox does: drop its oldest event, or disconnect with SLOW_CONSUMER.
    backpressure_policy: Policy = "drop_oldest"
    #: Milliseconds between heartbeats (WebSocket ping + ``info``/``ping`` frame).
    heartbeat_interval: Positive = 30_000
    #: Milliseconds without any frame from a client before it is closed with 1001.
    connection_timeout: Positive = 60_000
    #: Milliseconds a graceful shutdown may spend flushing outboxes.
    shutdown_timeout: NonNegative = 10_000
    #: Largest WebSocket message or REST body in bytes.
    max_message_size: Positive = 1_048_576
    max_topics: Positive = 1000
    max_subscribers_per_topic: Positive = 10_000
    max_connections: Positive = 10_000
    #: When set, REST (except /health) and the /ws handshake need this key.
    api_key: str | None = None
    log_level: LogLevel = "info"
    log_format: LogFormat = "text"
    # Extensions (not in the seed):
    #: Commands a topic actor queues before publishers wait (backpressure on publishers).
    topic_inbox_size: Positive = 1024
    #: Milliseconds a new TCP connection may take to finish its HTTP/WebSocket handshake.
    handshake_timeout: Positive = 10_000

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Settings from environment variables (``PORT``, ``MAX_QUEUE_SIZE``, ...).

        Unset and empty variables keep their defaults.

        Raises:
            SettingsError: a variable has a value its setting does not accept.
        """
        values = {
            name: environ[name.upper()]
            for name in FIELD_NAMES
            if environ.get(name.upper(), "") != ""
        }
        return cls().replace(**values)

    def replace(self, **values: Any) -> Settings:
        """A copy with ``values`` applied; strings are converted (``"10"`` -> 10).

        Raises:
            SettingsError: a value its setting does not accept, or an unknown name.
        """
        converted: dict[str, Any] = {}
        for name, raw in values.items():
            field_type = _FIELD_TYPES.get(name)
            if field_type is None:
                raise SettingsError(name.upper(), "unknown setting")
            try:
                converted[name] = msgspec.convert(raw, field_type, strict=False)
            except msgspec.ValidationError as exc:
                detail = str(exc).removesuffix(" - at `$`")
                raise SettingsError(name.upper(), f"{detail} (value {raw!r})") from None
        return msgspec.structs.replace(self, **converted)

    def public(self) -> dict[str, Any]:
        """The settings without secrets, for ``/info`` and start-up logs."""
        values = msgspec.structs.asdict(self)
        values["api_key"] = "***" if self.api_key else None
        return values


_FIELD_TYPES: Final[dict[str, Any]] = {f.name: f.type for f in msgspec.structs.fields(Settings)}
FIELD_NAMES: Final = tuple(_FIELD_TYPES)
