"""The contract's WebSocket rules, sans-IO: bytes in, messages and refusals out.

Frames and the opening handshake are parsed here as wsproto parses them
(differential tests hold both to it); on top, this module applies what
PROTOCOL.md adds: fragments are assembled into one message, a message over
``MAX_MESSAGE_SIZE`` is refused with ``MESSAGE_TOO_LARGE`` (the connection then
closes with 1009 and nothing more is read from it), a binary message is refused
with ``BAD_REQUEST`` (the connection stays open), pings are answered, and the
close codes the server sends are valid ones. No trio and no sockets: the
transport feeds bytes to :meth:`MessageReader.receive_data` and acts on what it
returns.

Server frames are built here too: :func:`text_frame` gives the bytes of one
unmasked text frame, written as they are to every subscriber of an event.
"""

from __future__ import annotations

import binascii
import codecs
import re
from base64 import b64decode, b64encode
from collections.abc import Iterator
from hashlib import sha1
from http import HTTPStatus
from typing import Any, Final
from urllib.parse import parse_qsl

import msgspec
from wsproto.frame_protocol import CloseReason

from .errors import (
    CLOSE_ABNORMAL,
    CLOSE_INVALID_DATA,
    CLOSE_NO_STATUS,
    CLOSE_NORMAL,
    CLOSE_PROTOCOL_ERROR,
    CLOSE_TLS_FAILED,
    BadRequest,
    ErrorCode,
    MessageTooLarge,
    PubSubError,
    error_body,
)

#: An unmasked WebSocket ping frame with no payload.
PING_FRAME: Final = b"\x89\x00"
#: Close reasons are at most 123 bytes (a control frame's payload is at most 125).
MAX_CLOSE_REASON: Final = 123

#: The opcode of a text frame (RFC 6455 5.2), as :func:`iter_server_frames` gives it.
OPCODE_TEXT: Final = 0x1


#: The header of every final text frame shorter than 126 bytes, built once.
_SHORT_TEXT_HEADERS: Final = [bytes((0x81, length)) for length in range(126)]


def text_frame(data: bytes) -> bytes:
    """One final, unmasked WebSocket text frame carrying ``data`` (RFC 6455 5.2).

    Server-to-client frames are never masked, so these bytes can be written
    to every subscriber as they are.
    """
    length = len(data)
    if length < 126:
        return _SHORT_TEXT_HEADERS[length] + data
    if length < 65536:
        return b"\x81\x7e" + length.to_bytes(2, "big") + data
    return b"\x81\x7f" + length.to_bytes(8, "big") + data


def iter_server_frames(data: bytes) -> Iterator[tuple[int, bytes]]:
    """``(opcode, payload)`` of each whole unmasked frame in ``data``, as built by
    :func:`text_frame` and :data:`PING_FRAME` (for transports that send messages,
    not bytes). A truncated last frame is an error: callers pass whole frames."""
    view = memoryview(data)
    position = 0
    while position < len(view):
        if position + 2 > len(view):
            raise ValueError("truncated WebSocket frame")
        opcode = view[position] & 0x0F
        length = view[position + 1] & 0x7F
        position += 2
        if length >= 126:
            size = 2 if length == 126 else 8
            if position + size > len(view):
                raise ValueError("truncated WebSocket frame")
            length = int.from_bytes(view[position : position + size], "big")
            position += size
        if position + length > len(view):
            raise ValueError("truncated WebSocket frame")
        yield opcode, bytes(view[position : position + length])
        position += length


def close_reason(reason: str) -> str:
    """``reason`` cut to at most :data:`MAX_CLOSE_REASON` UTF-8 bytes (never mid-character)."""
    encoded = reason.encode()
    if len(encoded) <= MAX_CLOSE_REASON:
        return reason
    return encoded[:MAX_CLOSE_REASON].decode(errors="ignore")


def sendable_close_code(code: int) -> int:
    """A close code that may be sent: 1005 (no status) and 1006 (abnormal) only
    describe what was received, so a close answering them carries 1000."""
    return CLOSE_NORMAL if code in (CLOSE_NO_STATUS, CLOSE_ABNORMAL, CLOSE_TLS_FAILED) else code


# --------------------------------------------------------------------------
# The handshake.


class UpgradeRequest(msgspec.Struct, frozen=True):
    """An upgrade request the handshake accepted: what the server looks at later.

    ``headers`` are ``(lower-case name, value)`` in request order, as wsproto gave
    them (without ``Host``, ``Sec-WebSocket-Extensions`` and ``Sec-WebSocket-Protocol``,
    and with ``Content-Length`` and ``Transfer-Encoding`` normalised as h11 does).
    """

    target: str
    headers: list[tuple[bytes, bytes]]
    #: The ``Host`` header (for the same-origin check of ``ALLOWED_ORIGINS``).
    host: str = ""


class Handshake:
    """The server side of an opening handshake whose request head has been read.

    A parser of its own (wsproto's and h11's parsing of the head and building of
    the ``101`` were about a third of the server's time per connection). It
    decides as wsproto's server handshake does, head for head: a differential
    test feeds both valid, broken and random heads and requires the same
    acceptance, status, ``Sec-WebSocket-Accept`` token, headers and query. Where
    wsproto raised something other than a protocol error (a ``Host`` that is not
    IDNA, non-ASCII bytes in ``Connection``, a ``HEAD`` request) the head is
    refused with 400 instead, and bytes behind the head are never read as an HTTP
    body (h11 read them as one with ``Transfer-Encoding: chunked``): they are frames.

    Args:
        head: The bytes read so far (the request head, maybe more).

    Attributes:
        request: The upgrade request, or None when ``head`` is not a valid one;
            :attr:`refusal` then holds the bytes of the HTTP error response.
    """

    __slots__ = ("_key", "_trailing", "refusal", "request")

    def __init__(self, head: bytes) -> None:
        self.request: UpgradeRequest | None = None
        self.refusal = b""
        self._key = b""
        # A client may send its first frames right behind the head (without
        # waiting for the 101): they are the reader's, not the handshake's.
        blank = _BLANK_LINE.search(head)
        self._trailing = head[blank.end() :] if blank is not None else b""
        try:
            self.request, self._key = _parse_request(head)
        except _Refusal as refusal:
            body = error_body(ErrorCode.BAD_REQUEST, refusal.message)
            self.refusal = error_response(refusal.status, body, refusal.headers)

    def header(self, name: bytes) -> str | None:
        """A request header's value (``name`` in lower case), or None."""
        assert self.request is not None
        for key, value in self.request.headers:
            if key == name:
                return value.decode("latin-1")
        return None

    def query(self, name: str) -> str | None:
        """A query parameter of the request target, or None."""
        assert self.request is not None
        # What urlsplit() calls the query: the target's scheme and authority
        # (absolute-form) never hold "?" or "#".
        query = self.request.target.partition("#")[0].partition("?")[2]
        for key, value in parse_qsl(query):
            if key == name:
                return value
        return None

    def reject(self, status: int, code: ErrorCode | str, message: str) -> bytes:
        """The bytes of an HTTP error response with the contract's JSON error body."""
        return error_response(status, error_body(code, message))

    def accept(self) -> tuple[bytes, bytes]:
        """The ``101`` response bytes, and any bytes the client sent right behind its
        request head (for :class:`MessageReader`)."""
        assert self.request is not None
        token = b64encode(sha1(self._key + _ACCEPT_GUID).digest())
        return _SWITCHING_PROTOCOLS % token, self._trailing


class _Refusal(Exception):
    """Why a request head is refused: the response's status, the message of its
    error body, and any header lines it adds."""

    def __init__(self, message: str, status: int = 400, headers: bytes = b"") -> None:
        super().__init__(message)
        self.message = f"bad WebSocket handshake: {message}"
        self.status = status
        self.headers = headers


def _parse_request(head: bytes) -> tuple[UpgradeRequest, bytes]:
    """The upgrade request in ``head`` and its ``Sec-WebSocket-Key`` (for the accept
    token); raises :class:`_Refusal` for a head to refuse.

    h11's rules for the head come first (any break: 400), then wsproto's for the
    upgrade, in wsproto's order: only the version check answers something other
    than 400 (426 for a version that is not 13), so it must see every 400 first.
    """
    if not head:
        raise _Refusal("empty request")
    # h11 ends a head at the first blank line, bare LFs included; a head that
    # starts with a blank line or whitespace has no request line.
    if head[0] < 0x21:
        raise _Refusal("no request line")
    blank = _BLANK_LINE.search(head)
    if blank is None:
        raise _Refusal("incomplete request head")
    block = head[: blank.start()]
    # Lines end with CRLF, or with a bare LF (h11 takes both; then one CR is cut).
    if block.count(b"\n") == block.count(b"\r\n"):
        lines = (block[:-1] if block[-1] == 0x0D else block).split(b"\r\n")
    else:
        lines = [line[:-1] if line[-1:] == b"\r" else line for line in block.split(b"\n")]
    request_line = _REQUEST_LINE.fullmatch(lines[0])
    if request_line is None:
        raise _Refusal("malformed request line")
    method, target, version = request_line.groups()

    # Obsolete line folding: a line starting with whitespace continues the last.
    fields: list[bytes] = []
    for line in lines[1:]:
        if line[0] in _FOLD:
            if not fields:
                raise _Refusal("continuation line at start of headers")
            fields[-1] += b" " + line.lstrip(b" \t")
        else:
            fields.append(line)

    headers: list[tuple[bytes, bytes]] = []
    keys: list[bytes] = []
    hosts = 0
    host = connection = key = upgrade_version = None
    upgrade = b""
    content_length: bytes | None = None
    chunked = False
    for field in fields:
        match = _HEADER_FIELD.fullmatch(field)
        if match is None:
            raise _Refusal("malformed header line")
        raw_name, value = match.groups()
        name = raw_name.lower()
        if name == b"host":
            hosts += 1
            try:
                value.decode("idna")
            except UnicodeError:
                raise _Refusal("Host is not a host name") from None
            host = value
            continue
        if name in _LISTS_NOT_KEPT:
            if not value.isascii():
                raise _Refusal(f"non-ASCII {raw_name.decode()} header")
            continue
        if name == b"connection":
            if not value.isascii():
                raise _Refusal("non-ASCII Connection header")
            connection = value
        elif name == b"sec-websocket-key":
            key = value
            keys.append(value)
        elif name == b"sec-websocket-version":
            upgrade_version = value
        elif name == b"upgrade":
            upgrade = value
        elif name == b"content-length":
            lengths = {length.strip() for length in value.split(b",")}
            value = lengths.pop()
            if lengths or not _CONTENT_LENGTH.fullmatch(value):
                raise _Refusal("bad Content-Length")
            if content_length is not None:
                if value != content_length:
                    raise _Refusal("conflicting Content-Length headers")
                continue  # h11 keeps the first of equal ones
            content_length = value
        elif name == b"transfer-encoding":
            value = value.lower()
            if chunked or value != b"chunked":
                raise _Refusal("unsupported Transfer-Encoding")
            chunked = True
        headers.append((name, value))
    if hosts > 1 or (not hosts and version == b"1.1"):
        raise _Refusal("exactly one Host header is required")

    if method != b"GET":
        raise _Refusal("the method must be GET")
    if connection is None or (
        connection.lower() != b"upgrade"  # what nearly every client sends
        and not any(token.strip().lower() == "upgrade" for token in connection.decode().split(","))
    ):
        raise _Refusal("missing 'Connection: Upgrade'")
    if upgrade_version != b"13":
        raise _Refusal(
            "unsupported Sec-WebSocket-Version "
            f"{upgrade_version.decode('latin-1')!r}: this server speaks 13"
            if upgrade_version
            else "missing Sec-WebSocket-Version (this server speaks 13)",
            426 if upgrade_version else 400,
            b"sec-websocket-version: 13\r\n",
        )
    if key is None:
        raise _Refusal("missing Sec-WebSocket-Key")
    if upgrade.lower() != b"websocket":
        raise _Refusal("missing 'Upgrade: websocket'")
    if host is None:
        raise _Refusal("missing Host")
    # Stricter than wsproto (RFC 6455 4.1 and 4.2.1): checked last, so a head
    # wsproto refuses is refused as wsproto did.
    if version < b"1.1":
        raise _Refusal(f"a WebSocket upgrade needs HTTP/1.1, not HTTP/{version.decode()}")
    if len(keys) > 1 or not _valid_key(key):
        raise _Refusal("Sec-WebSocket-Key must be 16 random bytes in base64 (24 characters)")
    return UpgradeRequest(target.decode(), headers, host.decode("latin-1")), key


def _valid_key(key: bytes) -> bool:
    """Whether ``key`` is base64 of 16 bytes, as RFC 6455 4.1 requires."""
    if len(key) != 24 or not key.endswith(b"=="):
        return False
    try:
        return len(b64decode(key, validate=True)) == 16
    except binascii.Error:
        return False


def error_response(status: int, body: bytes, headers: bytes = b"") -> bytes:
    """An HTTP/1.1 error response (``status`` with its reason phrase) carrying a JSON
    ``body`` and ``connection: close``: for answers written straight to a socket."""
    return _ERROR_RESPONSE % (status, _REASONS.get(status, b""), headers, len(body), body)


#: h11's grammar (RFC 7230) for the parts of a request head.
_BLANK_LINE: Final = re.compile(rb"\n\r?\n")
_TOKEN: Final = rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]+"
_REQUEST_LINE: Final = re.compile(b"(" + _TOKEN + rb") ([\x21-\x7e]+) HTTP/([0-9]\.[0-9])")
_HEADER_FIELD: Final = re.compile(
    b"(" + _TOKEN + rb"):[ \t]*((?:[^\x00\s]+(?:[ \t]+[^\x00\s]+)*)?)[ \t]*"
)
_CONTENT_LENGTH: Final = re.compile(rb"[0-9]{1,20}")
_FOLD: Final = b" \t"
#: Comma lists wsproto reads (decoding them as ASCII) but leaves out of the headers.
_LISTS_NOT_KEPT: Final = frozenset((b"sec-websocket-extensions", b"sec-websocket-protocol"))
_ACCEPT_GUID: Final = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#: wsproto's 101, byte for byte: no extension and no subprotocol is negotiated.
_SWITCHING_PROTOCOLS: Final = (
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: %s\r\n\r\n"
)
_ERROR_RESPONSE: Final = (
    b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\nconnection: close\r\n"
    b"%scontent-length: %d\r\n\r\n%s"
)
_REASONS: Final = {status.value: status.phrase.encode() for status in HTTPStatus}


# --------------------------------------------------------------------------
# Messages.


class Text(msgspec.Struct, frozen=True):
    """A whole text message within ``MAX_MESSAGE_SIZE``."""

    text: str


class Refused(msgspec.Struct, frozen=True):
    """A message the contract refuses. ``error.code.ws_close`` says whether the
    connection must close (``MESSAGE_TOO_LARGE``: 1009) or stays open."""

    error: PubSubError


class Reply(msgspec.Struct, frozen=True):
    """Bytes to send back at once (the pong answering a ping)."""

    data: bytes


class Closed(msgspec.Struct, frozen=True):
    """The peer closed (or broke the framing: a close with 1002, or 1007 for bad
    UTF-8). Answer with :meth:`MessageReader.close` and stop reading."""

    code: int
    reason: str


ReaderEvent = Text | Refused | Reply | Closed


class MessageReader:
    """Whole client messages from the bytes of an open WebSocket connection.

    A parser of its own for the server's hot path (wsproto's pure-Python frame
    parsing was most of the server's time per published message). It applies
    RFC 6455 as wsproto does, error for error: a differential test feeds both
    random and adversarial byte streams and requires the same messages, replies,
    refusals and close codes. It acts on whole frames only (a frame that has
    not fully arrived waits), so how the bytes are split never matters.

    Args:
        max_message_size: The largest message in bytes (``MAX_MESSAGE_SIZE``).
        data: Bytes already read after the handshake (a client may send frames
            right behind its request head); ``receive_data(b"")`` reads them.
    """

    __slots__ = (
        "_buffer",
        "_decoder",
        "_done",
        "_max_size",
        "_message",
        "_opcode",
        "_parts",
        "_received_close",
        "_sent_close",
        "_skip",
        "_skip_fin",
        "progressed",
        "refused_too_large",
    )

    def __init__(self, max_message_size: int, data: bytes = b"") -> None:
        self._max_size = max_message_size
        self._buffer = bytearray(data)
        #: The fragmented message in progress: its opcode (None: none), its parts
        #: (text or bytes) and its payload bytes so far.
        self._opcode: int | None = None
        self._parts: list[Any] = []
        self._message = 0
        self._decoder: codecs.IncrementalDecoder | None = None
        #: Nothing more is read: the peer closed, or broke the framing.
        self._done = False
        self._received_close = False
        self._sent_close = False
        #: Payload bytes of a refused (too large) frame still to discard, and
        #: whether that frame ends its message.
        self._skip = 0
        self._skip_fin = False
        #: Set once a message was too large: the connection is closing, and
        #: every later message is ignored.
        self.refused_too_large = False
        #: Whether the latest :meth:`receive_data` completed a frame (or read
        #: past a refused one's bytes): a byte of a frame that never completes
        #: is no sign of life (``CONNECTION_TIMEOUT``).
        self.progressed = False

    @property
    def can_send_close(self) -> bool:
        """Whether a close frame may still be sent (we have not sent one yet)."""
        return not self._sent_close

    @property
    def mid_frame(self) -> bool:
        """Whether part of a frame has arrived and the rest is awaited."""
        return bool(self._skip or (self._buffer and not self._done))

    def receive_data(self, data: bytes) -> list[ReaderEvent]:
        """Feed bytes from the peer; returns what they complete, in order."""
        if self._done:
            self.progressed = False
            return []
        buffer = self._buffer
        buffer += data
        out: list[ReaderEvent] = []
        position = 0
        size = len(buffer)
        while not self._done and size > position:
            if self._skip:
                # The rest of a frame already refused as too large: never buffered.
                taken = min(self._skip, size - position)
                position += taken
                self._skip -= taken
                if self._skip:
                    break
                if self._skip_fin:
                    self._opcode = self._decoder = None
                continue
            if size - position < 2:
                break
            first, second = buffer[position], buffer[position + 1]
            opcode = first & 0x0F
            fin = first & 0x80
            # The order of the checks is wsproto's (the first failing one decides).
            if opcode not in _OPCODES:
                out.append(self._fail(f"Invalid opcode {opcode:#x}"))
                break
            control = opcode & 0x08
            if control and not fin:
                out.append(self._fail("Invalid attempt to fragment control frame"))
                break
            length = second & 0x7F
            header = 2
            if length > 125:
                if control:
                    out.append(self._fail("Control frame with payload len > 125"))
                    break
                if length == 126:
                    if size - position < 4:
                        break
                    length = int.from_bytes(buffer[position + 2 : position + 4], "big")
                    header = 4
                    if length <= 125:
                        out.append(self._fail("Payload length used 2 bytes"))
                        break
                else:
                    if size - position < 10:
                        break
                    length = int.from_bytes(buffer[position + 2 : position + 10], "big")
                    header = 10
                    if length <= 0xFFFF:
                        out.append(self._fail("Payload length used 8 bytes"))
                        break
                    if length >> 63:
                        out.append(self._fail("8-byte payload length with non-zero MSB"))
                        break
            if first & 0x70:
                out.append(self._fail("Reserved bit set unexpectedly"))
                break
            if not second & 0x80:
                out.append(self._fail("server received unexpected unmasked frame"))
                break
            if not control and self._message + length > self._max_size:
                # The message is over the limit: refuse it now, before its bytes
                # arrive, and read the rest of the frame into nothing.
                if size - position < header + 4:
                    break  # its mask has not arrived yet
                failed = self._begin(opcode, fin)
                event: ReaderEvent | None = failed
                if failed is None:
                    if not self.refused_too_large:
                        event = self._too_large()
                    self._decoder = None
                    position += header + 4
                    self._skip, self._skip_fin = length, bool(fin)
                    if not length and fin:
                        self._opcode = None
                if event is not None:
                    out.append(event)
                continue
            end = position + header + 4 + length
            if end > size:
                break  # the rest of this frame has not arrived yet
            mask = buffer[position + header : position + header + 4]
            payload = _unmask(buffer[position + header + 4 : end], mask)
            position = end
            event = self._control(opcode, payload) if control else self._data(opcode, fin, payload)
            if event is not None:
                out.append(event)
        self.progressed = position > 0
        del buffer[:position]
        return out

    def _fail(self, reason: str, code: int = CLOSE_PROTOCOL_ERROR) -> Closed:
        """The peer broke the framing: nothing more is read."""
        self._done = True
        return Closed(code, reason)

    def _control(self, opcode: int, payload: bytes) -> ReaderEvent | None:
        if opcode == _PING:
            if self._sent_close:
                return None
            return Reply(b"\x8a" + bytes((len(payload),)) + payload)
        if opcode == _PONG:
            return None
        # Close.
        self._done = self._received_close = True
        if not payload:
            return Closed(CLOSE_NO_STATUS, "")
        if len(payload) == 1:
            return Closed(CLOSE_PROTOCOL_ERROR, "CLOSE with 1 byte payload")
        code = int.from_bytes(payload[:2], "big")
        if not 1000 <= code <= 4999:
            return Closed(CLOSE_PROTOCOL_ERROR, "CLOSE with invalid code")
        if code in _LOCAL_ONLY:
            return Closed(CLOSE_PROTOCOL_ERROR, "remote CLOSE with local-only reason")
        if code <= 2999 and code not in _KNOWN_CODES:
            return Closed(CLOSE_PROTOCOL_ERROR, "CLOSE with unknown reserved code")
        try:
            reason = payload[2:].decode()
        except UnicodeDecodeError as exc:
            return Closed(CLOSE_INVALID_DATA, f"Error decoding CLOSE reason: {exc}")
        return Closed(code, reason)

    def _begin(self, opcode: int, fin: int) -> Closed | None:
        """The message-level rules for a data frame's opcode."""
        if self._opcode is None:
            if opcode == _CONTINUATION:
                return self._fail("unexpected CONTINUATION")
            self._opcode = opcode
            if opcode == _TEXT and not self.refused_too_large:
                self._decoder = _utf8_decoder()
        elif opcode != _CONTINUATION:
            return self._fail(f"expected CONTINUATION, got {opcode:#x}")
        return None

    def _data(self, opcode: int, fin: int, payload: bytes) -> ReaderEvent | None:
        failed = self._begin(opcode, fin)
        if failed is not None:
            return failed
        message_opcode = self._opcode
        if self._decoder is not None:
            try:
                part: Any = self._decoder.decode(payload, bool(fin))
            except UnicodeDecodeError as exc:
                return self._fail(str(exc), CLOSE_INVALID_DATA)
        else:
            part = payload
        if fin:
            self._opcode = self._decoder = None
        if self.refused_too_large:
            return None
        # Within MAX_MESSAGE_SIZE: a frame that would pass it was refused by its header.
        self._message += len(payload)
        self._parts.append(part)
        if not fin:
            return None
        parts = self._parts
        self._parts, self._message = [], 0
        if message_opcode == _BINARY:
            return Refused(BadRequest("binary frames are not supported: send JSON in text frames"))
        return Text(parts[0] if len(parts) == 1 else "".join(parts))

    def _too_large(self) -> Refused:
        self.refused_too_large = True
        self._parts, self._message = [], 0
        return Refused(
            MessageTooLarge(f"message larger than MAX_MESSAGE_SIZE ({self._max_size} bytes)")
        )

    def close(self, code: int, reason: str) -> bytes:
        """The close frame to send (``b""`` when one was already sent)."""
        if self._sent_close:
            return b""
        self._sent_close = True
        payload = sendable_close_code(code).to_bytes(2, "big") + close_reason(reason).encode()
        return b"\x88" + bytes((len(payload),)) + payload


_CONTINUATION: Final = 0x0
_TEXT: Final = 0x1
_BINARY: Final = 0x2
_CLOSE: Final = 0x8
_PING: Final = 0x9
_PONG: Final = 0xA
_OPCODES: Final = frozenset((_CONTINUATION, _TEXT, _BINARY, _CLOSE, _PING, _PONG))
#: Close codes a peer may not send (RFC 6455 7.4.1), and the known ones of 1000-2999.
_LOCAL_ONLY: Final = frozenset((1005, 1006, 1015))
_KNOWN_CODES: Final = frozenset(int(reason) for reason in CloseReason)
_utf8_decoder: Final = codecs.getincrementaldecoder("utf-8")


def _unmask(data: bytearray, mask: bytearray) -> bytes:
    """XOR ``data`` with the repeated 4-byte ``mask`` (one big-integer operation)."""
    length = len(data)
    if not length:
        return b""
    key = (bytes(mask) * (length // 4 + 1))[:length]
    return (int.from_bytes(data, "little") ^ int.from_bytes(key, "little")).to_bytes(
        length, "little"
    )
