"""Error codes of the wire contract and the exceptions that carry them.

One table maps every code to its HTTP status and, where the code ends a
WebSocket connection, to the close code (PROTOCOL.md "Errors"). Everything
else in the package looks codes up here instead of repeating numbers.
"""

from __future__ import annotations

import enum
from typing import Final


class ErrorCode(enum.Enum):
    """The error codes of PROTOCOL.md. ``value`` is the string sent on the wire."""

    BAD_REQUEST = "BAD_REQUEST"
    TOPIC_NOT_FOUND = "TOPIC_NOT_FOUND"
    TOPIC_EXISTS = "TOPIC_EXISTS"
    MESSAGE_TOO_LARGE = "MESSAGE_TOO_LARGE"
    LIMIT_EXCEEDED = "LIMIT_EXCEEDED"
    SLOW_CONSUMER = "SLOW_CONSUMER"
    UNAUTHORIZED = "UNAUTHORIZED"
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
#: Never sent on the wire: the connection ended without a close frame.
CLOSE_ABNORMAL: Final = 1006
CLOSE_TOO_BIG: Final = 1009
CLOSE_INTERNAL: Final = 1011
CLOSE_TRY_AGAIN_LATER: Final = 1013


# code -> (HTTP status, WebSocket close code or None when the connection stays open)
_TABLE: Final[dict[ErrorCode, tuple[int, int | None]]] = {
    ErrorCode.BAD_REQUEST: (400, None),
    ErrorCode.TOPIC_NOT_FOUND: (404, None),
    ErrorCode.TOPIC_EXISTS: (409, None),
    ErrorCode.MESSAGE_TOO_LARGE: (413, CLOSE_TOO_BIG),
    # LIMIT_EXCEEDED closes only when it refuses a connection (MAX_CONNECTIONS);
    # the transport passes 1013 explicitly there.
    ErrorCode.LIMIT_EXCEEDED: (429, None),
    ErrorCode.SLOW_CONSUMER: (
        429,
        CLOSE_TRY_AGAIN_LATER,
    ),  # never sent over REST; the seed's status
    ErrorCode.UNAUTHORIZED: (401, None),
    ErrorCode.INTERNAL: (500, CLOSE_INTERNAL),
}


class PubSubError(Exception):
    """An error with a contract code, a human message and the request it answers.

    Raised by the protocol decoder (the peer broke the contract) and by the
    broker (a request could not be carried out). The transport turns it into
    an error frame, the REST layer into a JSON error body.
    """

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        request_id: str | int | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code.value}, {self.message!r})"


class ProtocolError(PubSubError):
    """The peer sent something the contract does not allow."""


# Typed errors, one per code, so clients can ``except TopicNotFound``.


class BadRequest(PubSubError):
    pass


class TopicNotFound(PubSubError):
    pass


class TopicExists(PubSubError):
    pass


class MessageTooLarge(PubSubError):
    pass


class LimitExceeded(PubSubError):
    pass


class SlowConsumer(PubSubError):
    pass


class Unauthorized(PubSubError):
    pass


class InternalError(PubSubError):
    pass


_TYPED: Final[dict[ErrorCode, type[PubSubError]]] = {
    ErrorCode.BAD_REQUEST: BadRequest,
    ErrorCode.TOPIC_NOT_FOUND: TopicNotFound,
    ErrorCode.TOPIC_EXISTS: TopicExists,
    ErrorCode.MESSAGE_TOO_LARGE: MessageTooLarge,
    ErrorCode.LIMIT_EXCEEDED: LimitExceeded,
    ErrorCode.SLOW_CONSUMER: SlowConsumer,
    ErrorCode.UNAUTHORIZED: Unauthorized,
    ErrorCode.INTERNAL: InternalError,
}


def error_for(
    code: ErrorCode | str, message: str, request_id: str | int | None = None
) -> PubSubError:
    """The typed error for ``code`` (an unknown code string gives ``InternalError``)."""
    try:
        code = ErrorCode(code)
    except ValueError:
        return InternalError(ErrorCode.INTERNAL, f"{code}: {message}", request_id)
    return _TYPED[code](code, message, request_id)
