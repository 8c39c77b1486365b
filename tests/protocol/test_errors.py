"""The error model: one table of codes, typed errors that carry their code, one
REST error body."""

from __future__ import annotations

import msgspec
import pytest

import pubsub
from pubsub import (
    BadRequest,
    ErrorCode,
    InternalError,
    LimitExceeded,
    MessageTooLarge,
    ProtocolError,
    PubSubError,
    RateLimited,
    SlowConsumer,
    TopicExists,
    TopicNotFound,
    Unauthorized,
    Unavailable,
)
from pubsub._protocol.errors import error_body, error_for

TYPED: dict[ErrorCode, type[PubSubError]] = {
    ErrorCode.BAD_REQUEST: BadRequest,
    ErrorCode.TOPIC_NOT_FOUND: TopicNotFound,
    ErrorCode.TOPIC_EXISTS: TopicExists,
    ErrorCode.MESSAGE_TOO_LARGE: MessageTooLarge,
    ErrorCode.LIMIT_EXCEEDED: LimitExceeded,
    ErrorCode.SLOW_CONSUMER: SlowConsumer,
    ErrorCode.UNAUTHORIZED: Unauthorized,
    ErrorCode.RATE_LIMITED: RateLimited,
    ErrorCode.UNAVAILABLE: Unavailable,
    ErrorCode.INTERNAL: InternalError,
}

HTTP_STATUS = {
    ErrorCode.BAD_REQUEST: 400,
    ErrorCode.TOPIC_NOT_FOUND: 404,
    ErrorCode.TOPIC_EXISTS: 409,
    ErrorCode.MESSAGE_TOO_LARGE: 413,
    ErrorCode.LIMIT_EXCEEDED: 429,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.UNAVAILABLE: 503,
    ErrorCode.INTERNAL: 500,
}

# None: the error frame is sent and the connection stays open (or, for
# TOPIC_EXISTS / UNAUTHORIZED, the code never travels as an error frame).
WS_CLOSE = {
    ErrorCode.BAD_REQUEST: None,
    ErrorCode.TOPIC_NOT_FOUND: None,
    ErrorCode.TOPIC_EXISTS: None,
    ErrorCode.MESSAGE_TOO_LARGE: 1009,
    ErrorCode.LIMIT_EXCEEDED: None,
    ErrorCode.SLOW_CONSUMER: 1013,
    ErrorCode.UNAUTHORIZED: None,
    ErrorCode.RATE_LIMITED: None,
    ErrorCode.UNAVAILABLE: None,
    ErrorCode.INTERNAL: 1011,
}


def test_error_codes_are_exactly_the_protocol_table() -> None:
    assert {code.value for code in ErrorCode} == {
        "BAD_REQUEST",
        "TOPIC_NOT_FOUND",
        "TOPIC_EXISTS",
        "MESSAGE_TOO_LARGE",
        "LIMIT_EXCEEDED",
        "SLOW_CONSUMER",
        "UNAUTHORIZED",
        "RATE_LIMITED",
        "UNAVAILABLE",
        "INTERNAL",
    }
    assert set(WS_CLOSE) == set(ErrorCode)
    for code in ErrorCode:
        assert code.value == code.name


@pytest.mark.parametrize(("code", "status"), list(HTTP_STATUS.items()), ids=lambda v: str(v))
def test_error_code_http_status(code: ErrorCode, status: int) -> None:
    assert code.http_status == status


@pytest.mark.parametrize(("code", "close"), list(WS_CLOSE.items()), ids=lambda v: str(v))
def test_error_code_websocket_close(code: ErrorCode, close: int | None) -> None:
    assert code.ws_close == close


def test_protocol_error_is_a_bad_request_with_message_and_request_id() -> None:
    error = ProtocolError("bad", "r-1")
    assert isinstance(error, BadRequest)
    assert (error.code, error.message, error.request_id, str(error)) == (
        ErrorCode.BAD_REQUEST,
        "bad",
        "r-1",
        "bad",
    )
    assert repr(error) == "ProtocolError('bad')"


@pytest.mark.parametrize(("code", "cls"), list(TYPED.items()), ids=lambda v: str(v))
def test_every_code_has_one_typed_error_carrying_it(
    code: ErrorCode, cls: type[PubSubError]
) -> None:
    assert cls.code is code
    error = cls("message", 7)
    assert (error.code, error.message, error.request_id) == (code, "message", 7)
    assert getattr(pubsub, cls.__name__) is cls


@pytest.mark.parametrize(("code", "cls"), list(TYPED.items()), ids=lambda v: str(v))
def test_error_for_builds_the_typed_error_from_a_wire_code(
    code: ErrorCode, cls: type[PubSubError]
) -> None:
    for given in (code, code.value):
        error = error_for(given, "why", "r")
        assert type(error) is cls
        assert (error.message, error.request_id) == ("why", "r")


def test_error_for_an_unknown_wire_code_is_internal() -> None:
    error = error_for("NEW_CODE", "from a newer server")
    assert type(error) is InternalError
    assert error.message == "NEW_CODE: from a newer server"


def test_typed_errors_are_caught_by_their_class_and_by_the_base() -> None:
    with pytest.raises(TopicExists):
        raise error_for(ErrorCode.TOPIC_EXISTS, "x")
    with pytest.raises(PubSubError):
        raise TopicNotFound("y")


def test_error_body_is_the_contract_rest_body() -> None:
    body = msgspec.json.decode(error_body(ErrorCode.TOPIC_NOT_FOUND, "topic 'x' does not exist"))
    assert list(body) == ["error", "message", "ts"]
    assert body["error"] == "TOPIC_NOT_FOUND"
    assert body["message"] == "topic 'x' does not exist"
    # Routing errors that are not contract codes keep their HTTP reason.
    assert msgspec.json.decode(error_body("NOT_FOUND", "no route"))["error"] == "NOT_FOUND"
