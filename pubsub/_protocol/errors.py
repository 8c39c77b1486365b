"""Error codes of the wire contract and the exceptions that carry them.

One table maps every code to its HTTP status and, where the code ends a
WebSocket connection, to the close code (PROTOCOL.md "Errors"). Every typed
error carries its code as a class attribute, so ``except TopicNotFound`` catches
exactly what the contract calls ``TOPIC_NOT_FOUND``, whoever raised it: the
decoder, the node, an engine or the client library.
"""

from __future__ import annotations

import enum
from typing import ClassVar, Final

import msgspec

from .timestamps import ts_now


class ErrorCode(enum.Enum):
    """The error codes of PROTOCOL.md. ``value`` is the string sent on the wire."""

    BAD_REQUEST = "BAD_REQUEST"
    TOPIC_NOT_FOUND = "TOPIC_NOT_FOUND"
    TOPIC_EXISTS = "TOPIC_EXISTS"
    MESSAGE_TOO_LARGE = "MESSAGE_TOO_LARGE"
    LIMIT_EXCEEDED = "LIMIT_EXCEEDED"
    SLOW_CONSUMER = "SLOW_CONSUMER"
    UNAUTHORIZED = "UNAUTHORIZED"
    RATE_LIMITED = "RATE_LIMITED"
    UNAVAILABLE = "UNAVAILABLE"
    INTERNAL = "INTERNAL"

    @property
    def http_status(self) -> int:
        """The HTTP status a REST call answers with for this code."""
        return _TABLE[self][0]

    @property
    def ws_close(self) -> int | None:
        """The WebSocket close code that follows the error frame, or None if it stays open."""
        return _TABLE[self][1]


#: WebSocket close codes used by the server (RFC 6455 section 7.4.1).
CLOSE_NORMAL: Final = 1000
CLOSE_GOING_AWAY: Final = 1001
#: Never sent on the wire: the peer's close frame carried no code.
CLOSE_NO_STATUS: Final = 1005
#: Never sent on the wire: the connection ended without a close frame.
CLOSE_ABNORMAL: Final = 1006
CLOSE_PROTOCOL_ERROR: Final = 1002
CLOSE_INVALID_DATA: Final = 1007
#: A peer that breaks a rule no other code covers (a flood of pings it never reads).
CLOSE_POLICY_VIOLATION: Final = 1008
CLOSE_TOO_BIG: Final = 1009
CLOSE_INTERNAL: Final = 1011
CLOSE_TRY_AGAIN_LATER: Final = 1013
#: Never sent on the wire: a TLS handshake failed.
CLOSE_TLS_FAILED: Final = 1015


# code -> (HTTP status, WebSocket close code or None when the connection stays open)
_TABLE: Final[dict[ErrorCode, tuple[int, int | None]]] = {
    ErrorCode.BAD_REQUEST: (400, None),
    ErrorCode.TOPIC_NOT_FOUND: (404, None),
    ErrorCode.TOPIC_EXISTS: (409, None),
    ErrorCode.MESSAGE_TOO_LARGE: (413, CLOSE_TOO_BIG),
    # LIMIT_EXCEEDED closes only when it refuses a connection (MAX_CONNECTIONS);
    # the transport passes 1013 explicitly there.
    ErrorCode.LIMIT_EXCEEDED: (429, None),
    # Never sent over REST; 429 is the seed's status.
    ErrorCode.SLOW_CONSUMER: (429, CLOSE_TRY_AGAIN_LATER),
    ErrorCode.UNAUTHORIZED: (401, None),
    # v1.2: a publish over RATE_LIMIT / REST_RATE_LIMIT; the connection stays open.
    ErrorCode.RATE_LIMITED: (429, None),
    # v1.2: the engine (Redis) cannot be reached or did not answer in time.
    ErrorCode.UNAVAILABLE: (503, None),
    ErrorCode.INTERNAL: (500, CLOSE_INTERNAL),
}


class PubSubError(Exception):
    """An error with a contract code, a human message and the request it answers.

    Raise one of the subclasses (``TopicNotFound(...)``); each names its code in
    :attr:`code`. The transport turns it into an error frame, the REST layer
    into a JSON error body, the client library raises it to the application.
    """

    code: ClassVar[ErrorCode] = ErrorCode.INTERNAL

    def __init__(self, message: str, request_id: str | int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.request_id = request_id

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


class BadRequest(PubSubError):
    code = ErrorCode.BAD_REQUEST


class ProtocolError(BadRequest):
    """The peer sent something the contract does not allow (malformed JSON, a
    missing field, a bad topic name): a kind of ``BAD_REQUEST``."""


class TopicNotFound(PubSubError):
    code = ErrorCode.TOPIC_NOT_FOUND


class TopicExists(PubSubError):
    code = ErrorCode.TOPIC_EXISTS


class MessageTooLarge(PubSubError):
    code = ErrorCode.MESSAGE_TOO_LARGE


class LimitExceeded(PubSubError):
    code = ErrorCode.LIMIT_EXCEEDED


class SlowConsumer(PubSubError):
    code = ErrorCode.SLOW_CONSUMER


class Unauthorized(PubSubError):
    code = ErrorCode.UNAUTHORIZED


class RateLimited(PubSubError):
    """A publish over the rate limit (v1.2): not published; try again after
    :attr:`retry_after_ms` milliseconds."""

    code = ErrorCode.RATE_LIMITED

    def __init__(
        self, message: str, request_id: str | int | None = None, *, retry_after_ms: int = 0
    ) -> None:
        super().__init__(message, request_id)
        self.retry_after_ms = retry_after_ms

    @property
    def retry_after(self) -> float:
        """:attr:`retry_after_ms` in seconds."""
        return self.retry_after_ms / 1000


class Unavailable(PubSubError):
    """The engine (Redis) cannot be reached or did not answer in time; nothing
    was acknowledged that was not stored. Retry later."""

    code = ErrorCode.UNAVAILABLE


class InternalError(PubSubError):
    code = ErrorCode.INTERNAL


_TYPED: Final[dict[ErrorCode, type[PubSubError]]] = {
    cls.code: cls
    for cls in (
        BadRequest,
        TopicNotFound,
        TopicExists,
        MessageTooLarge,
        LimitExceeded,
        SlowConsumer,
        Unauthorized,
        RateLimited,
        Unavailable,
        InternalError,
    )
}


def error_for(
    code: ErrorCode | str,
    message: str,
    request_id: str | int | None = None,
    *,
    retry_after_ms: int | None = None,
) -> PubSubError:
    """The typed error for ``code`` (an unknown code string gives ``InternalError``)."""
    try:
        code = ErrorCode(code)
    except ValueError:
        return InternalError(f"{code}: {message}", request_id)
    if code is ErrorCode.RATE_LIMITED:
        return RateLimited(message, request_id, retry_after_ms=retry_after_ms or 0)
    return _TYPED[code](message, request_id)


class RestError(msgspec.Struct, frozen=True, omit_defaults=True):
    """Every REST error: the error code, a message saying what is wrong, and the time.

    ``error`` is an :class:`ErrorCode` value, or the HTTP reason (``NOT_FOUND``)
    for routing errors outside the contract. The OpenAPI document's error
    schema is generated from this type.
    """

    error: str
    message: str
    ts: str
    retry_after_ms: int | None = None


_encode_body: Final = msgspec.json.Encoder().encode


def error_body(code: ErrorCode | str, message: str, retry_after_ms: int | None = None) -> bytes:
    """The contract's REST error body ``{"error","message","ts"}``, encoded.

    The one place that shapes it: REST errors, refused WebSocket handshakes and
    the dispatcher's 503 all use it. ``code`` may be a non-contract HTTP reason
    (``NOT_FOUND``) for routing errors.
    """
    name = code.value if isinstance(code, ErrorCode) else code
    return _encode_body(RestError(name, message, ts_now(), retry_after_ms))
