"""Structured log events: the JSON formatter and the connection events.

Every event the broker logs for operators carries its data as ``extra``
fields (``event`` names it: ``connection_opened``, ``connection_closed``,
``auth_failed``, ``slow_consumer_disconnect``, ``topic_created``,
``topic_deleted``); :class:`JsonFormatter` (``LOG_FORMAT=json``) writes them
as top-level keys beside ``ts``, ``level``, ``logger`` and ``msg``, so a log
pipeline filters on ``event`` and reads counters without parsing ``msg``.
``msg`` stays a readable sentence for ``LOG_FORMAT=text``, which shows only it.

Connection events are at debug level. A transport asks :func:`connection_logging`
once per connection and logs nothing, and builds nothing, when it is off: no
cost per connection beyond that check, and none per message.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, Final

from .._core.session import Session
from .._protocol.timestamps import now_ms

#: The logger of connection events (debug): ``pubsub.connection``.
log: Final = logging.getLogger("pubsub.connection")

#: Attributes every LogRecord has; anything else on a record came from ``extra``.
_RECORD_ATTRIBUTES: Final = frozenset(
    logging.LogRecord("", logging.INFO, "", 0, "", (), None).__dict__
) | {"message", "asctime", "taskName"}


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The ``extra={...}`` fields of ``record``."""
    return {k: v for k, v in record.__dict__.items() if k not in _RECORD_ATTRIBUTES}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``ts`` (UTC, milliseconds), ``level``,
    ``logger``, ``msg``, then every ``extra`` field as a top-level key (a field
    named like one of those four is left out), and ``exc`` / ``stack`` when the
    record has them. Values JSON cannot hold are written as ``str(value)``."""

    def __init__(self) -> None:
        super().__init__()
        self.converter = time.gmtime

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in extra_fields(record).items():
            entry.setdefault(key, value)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str)


def connection_logging() -> bool:
    """Whether connection events are logged (debug on ``pubsub.connection``):
    ask once per connection."""
    return log.isEnabledFor(logging.DEBUG)


def connection_opened(session: Session, peer: str | None, transport: str) -> None:
    """Log ``connection_opened`` (call only when :func:`connection_logging`)."""
    log.debug(
        "connection %s opened from %s",
        session.connection_id,
        peer,
        extra={
            "event": "connection_opened",
            "connection_id": session.connection_id,
            "peer": peer,
            "transport": transport,
        },
    )


def connection_closed(session: Session) -> None:
    """Log ``connection_closed`` with the connection's counters (call only when
    :func:`connection_logging`, after the node closed the session)."""
    reason = session.close_reason
    duration_s = round((now_ms() - session.connected_at) / 1000, 3)
    log.debug(
        "connection %s (client_id %r) closed after %.1f s: %s %s",
        session.connection_id,
        session.client_id,
        duration_s,
        reason.code if reason is not None else "",
        reason.reason if reason is not None else "",
        extra={
            "event": "connection_closed",
            "connection_id": session.connection_id,
            "client_id": session.client_id,
            "duration_s": duration_s,
            "close_code": reason.code if reason is not None else None,
            "reason": reason.reason if reason is not None else None,
            "error": reason.error.value if reason is not None and reason.error else None,
            "received": session.received,
            "published": session.published,
            "delivered": session.delivered,
            "dropped": session.dropped,
        },
    )


def peer_name(address: object) -> str | None:
    """``host:port`` of a socket's peer address (None when unknown)."""
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return None
