"""``pub`` and ``sub``: messages over one WebSocket connection (the client library).

Both run under Trio with SIGINT taken over: Ctrl-C cancels the command, so the
connection closes in order and the command exits 130 without a traceback.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Final

import msgspec
import trio

from .._protocol.errors import PubSubError, TopicNotFound
from .._protocol.frames import check_pattern, is_pattern
from ..client import ConnectionLost, Event, Gap, ServerUnreachable, open_client
from .exits import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    CommandError,
    ending,
    leaves,
    stdout_closed,
)
from .remote import ws_url

#: ``sub`` prints an event that several TOPIC arguments match once: it remembers
#: this many of the latest events it printed. The client hands one event to each
#: matching subscription in turn, so their tasks print the copies a few events
#: apart; this leaves a wide margin.
RECENT_EVENTS: Final = 10_000
#: Bytes ``pub`` asks for per read of stdin.
STDIN_CHUNK: Final = 65536


def run_ws(main: Callable[[], Awaitable[None]]) -> int:
    """Run ``main`` under Trio; its exit code.

    Raises:
        CommandError: the server could not be reached (3) or refused (1), or
            ``main`` raised one itself.
    """
    interrupted = False

    async def guarded() -> None:
        nonlocal interrupted
        with trio.open_signal_receiver(signal.SIGINT) as signals:
            async with trio.open_nursery() as nursery:

                async def on_interrupt() -> None:
                    nonlocal interrupted
                    async for _ in signals:
                        interrupted = True
                        nursery.cancel_scope.cancel()

                nursery.start_soon(on_interrupt)
                await main()
                nursery.cancel_scope.cancel()

    try:
        trio.run(guarded)
    except BaseException as error:
        code = EXIT_INTERRUPTED if interrupted else ending(error)
        if code is not None:
            return code
        translated = _command_error(error)
        if translated is None:
            raise
        raise translated from None
    return EXIT_INTERRUPTED if interrupted else EXIT_OK


def _command_error(error: BaseException) -> CommandError | None:
    """The one-line failure that ``error`` (maybe a group) stands for, if any."""
    found = leaves(error)
    for leaf in found:
        if isinstance(leaf, CommandError):
            return leaf
    for leaf in found:
        if isinstance(leaf, ServerUnreachable | ConnectionLost):
            return CommandError(str(leaf), EXIT_UNREACHABLE)
        if isinstance(leaf, PubSubError):
            return CommandError(f"{leaf.code.value}: {leaf.message}", EXIT_REFUSED)
    return None


# ---------------------------------------------------------------------- pub


def add_pub(commands: Any, common: argparse.ArgumentParser) -> None:
    pub = commands.add_parser(
        "pub",
        parents=[common],
        help="publish messages",
        description="Publish to TOPIC: the MESSAGE argument, or one message per stdin line. "
        "A message is JSON, or any text with --raw (published as a JSON string).",
    )
    pub.add_argument("topic", metavar="TOPIC")
    pub.add_argument(
        "json", nargs="?", metavar="MESSAGE", help="the payload (read stdin lines when omitted)"
    )
    pub.add_argument("--id", help="message id (default: random); only with a MESSAGE argument")
    pub.add_argument(
        "--ttl-ms",
        type=int,
        metavar="N",
        help="each message expires N ms after it is published (replaces the topic's TTL)",
    )
    pub.add_argument(
        "--raw",
        action="store_true",
        help="publish each line (or MESSAGE) as a string payload, not as JSON; blank lines too",
    )
    pub.add_argument(
        "--keep-going",
        "-k",
        action="store_true",
        help="stdin: report a line that is not JSON, or that the server refuses, on stderr "
        "with its line number and go on; exit 1 at the end if any failed",
    )
    pub.add_argument("--verbose", "-v", action="store_true", help="print each ack")
    pub.set_defaults(run=_pub)


def late_message(args: argparse.Namespace, extra: list[str]) -> bool:
    """Take a MESSAGE that came after an option (``pub t --raw "some text"``):
    argparse reads positionals only before the first option, and leaves it over."""
    if getattr(args, "run", None) is not _pub or args.json is not None or len(extra) != 1:
        return False
    if extra[0].startswith("--"):
        return False
    args.json = extra[0]
    return True


def _payload(data: bytes, raw: bool) -> msgspec.Raw:
    """A line (or the MESSAGE argument) as the payload to publish."""
    if raw:
        try:
            text = data.decode()
        except UnicodeDecodeError as exc:
            raise CommandError(f"not UTF-8 text ({exc.reason})", EXIT_USAGE) from None
        return msgspec.Raw(msgspec.json.encode(text))
    try:
        msgspec.json.decode(data)
    except msgspec.DecodeError as exc:
        shown = data.strip()[:80].decode(errors="replace")
        raise CommandError(
            f"not JSON: {shown!r} ({exc}); --raw publishes text as a string", EXIT_USAGE
        ) from None
    return msgspec.Raw(data.strip())


async def _stdin_lines() -> AsyncIterator[bytes]:
    """Lines of stdin without their line ends, as they come.

    Reads the file descriptor in a thread that a cancellation (Ctrl-C) may
    abandon: a thread of trio.wrap_file would hold the command until the next
    line, and one blocked in a buffered file's read would hold its lock when
    the interpreter exits.
    """
    fd = sys.stdin.fileno()
    pending = b""
    while chunk := await trio.to_thread.run_sync(os.read, fd, STDIN_CHUNK, abandon_on_cancel=True):
        *lines, pending = (pending + chunk).split(b"\n")
        for line in lines:
            yield line.removesuffix(b"\r")
    if pending:
        yield pending.removesuffix(b"\r")


def _pub(args: argparse.Namespace) -> int:
    if args.ttl_ms is not None and args.ttl_ms < 1:
        raise CommandError("--ttl-ms must be at least 1", EXIT_USAGE)
    single: msgspec.Raw | None = None
    if args.json is not None:
        if args.keep_going:
            raise CommandError("--keep-going is for stdin lines, not a MESSAGE", EXIT_USAGE)
        single = _payload(args.json.encode(), args.raw)
    elif args.id:
        raise CommandError("--id needs a MESSAGE argument", EXIT_USAGE)

    async def main() -> None:
        async with open_client(ws_url(args.url), api_key=args.api_key, reconnect=False) as client:

            async def publish(payload: msgspec.Raw, message_id: str | None) -> None:
                ack = await client.publish(args.topic, payload, id=message_id, ttl_ms=args.ttl_ms)
                if args.verbose:
                    print(f"ack topic={ack.topic} offset={ack.offset} id={ack.id}", flush=True)

            if single is not None:
                await publish(single, args.id)
                return
            number = failed = 0
            async for line in _stdin_lines():
                number += 1
                if not args.raw and not line.strip():
                    continue
                try:
                    await publish(_payload(line, args.raw), None)
                except (CommandError, PubSubError) as exc:
                    if isinstance(exc, PubSubError):
                        exc = CommandError(f"{exc.code.value}: {exc.message}", EXIT_REFUSED)
                    if not args.keep_going:
                        raise CommandError(f"line {number}: {exc}", exc.exit_code) from None
                    print(f"trio-pubsub: line {number}: {exc}", file=sys.stderr, flush=True)
                    failed += 1
            if failed:
                raise CommandError(f"{failed} of {number} lines were not published", EXIT_REFUSED)

    return run_ws(main)


# ---------------------------------------------------------------------- sub


def add_sub(commands: Any, common: argparse.ArgumentParser) -> None:
    sub = commands.add_parser(
        "sub",
        parents=[common],
        help="print events",
        description="Print events, one per line, each naming its topic. A TOPIC may be a "
        "pattern: `*` matches exactly one dot-separated segment, a final `>` one or more "
        "(quote it for the shell: 'orders.>'). An event several TOPICs match is printed once. "
        "Ends quietly when its reader goes away (| head -1); a topic that is deleted while "
        "it is followed ends it with exit code 1.",
    )
    sub.add_argument("topics", nargs="+", metavar="TOPIC")
    sub.add_argument(
        "--last-n",
        type=int,
        default=0,
        help="replay this many stored messages (not with a pattern)",
    )
    sub.add_argument(
        "--filter",
        metavar="JSON",
        help='only messages this content filter accepts, e.g. \'{"path": "payload.amount", '
        '"op": "gt", "value": 100}\' (applies to every TOPIC)',
    )
    sub.add_argument("--count", type=int, help="exit after this many events")
    sub.add_argument("--json", action="store_true", help="line-delimited JSON (for jq)")
    sub.set_defaults(run=_sub)


def _sub_filter(text: str | None) -> dict[str, Any] | None:
    """The ``--filter`` argument as a JSON object (a usage error otherwise)."""
    if text is None:
        return None
    try:
        spec = msgspec.json.decode(text)
    except msgspec.DecodeError as exc:
        raise CommandError(
            f"--filter is not JSON: {text.strip()[:80]!r} ({exc})", EXIT_USAGE
        ) from None
    if not isinstance(spec, dict):
        raise CommandError(f"--filter must be a JSON object, not {text.strip()[:80]!r}", EXIT_USAGE)
    return spec


def _gap_text(gap: Gap) -> str:
    """What ``sub`` says about a gap (a pattern's has no offset: each topic has its own)."""
    where = "" if is_pattern(gap.topic) else f" after offset {gap.after_offset}"
    count = "" if gap.missed is None else f", {gap.missed} missed"
    return f"{gap.topic}: missed messages{where} ({gap.reason}{count})"


def topic_gone(topic: str) -> CommandError:
    """A followed topic no longer exists (the client resubscribes after a
    reconnect, and a restarted memory broker has no topics)."""
    return CommandError(
        f"topic {topic!r} no longer exists (deleted, or the broker restarted without it); "
        "re-create it or run the broker with AUTO_CREATE_TOPICS=true",
        EXIT_REFUSED,
    )


def _sub(args: argparse.Namespace) -> int:
    if args.count is not None and args.count < 1:
        raise CommandError("--count must be at least 1", EXIT_USAGE)
    if args.last_n < 0:
        raise CommandError("--last-n must be at least 0", EXIT_USAGE)
    for topic in args.topics:
        try:
            check_pattern(topic)
        except ValueError as exc:
            raise CommandError(str(exc), EXIT_USAGE) from None
        if args.last_n and is_pattern(topic):
            raise CommandError(f"--last-n cannot be used with a pattern ({topic!r})", EXIT_USAGE)
    content_filter = _sub_filter(args.filter)
    encoder = msgspec.json.Encoder()

    async def main() -> None:
        async with open_client(ws_url(args.url), api_key=args.api_key) as client:
            seen = 0
            done = trio.Event()
            # Keys of the latest events printed, oldest first (insertion order).
            recent: dict[tuple[str, int, str, str], None] = {}

            def show(event: Event) -> None:
                nonlocal seen
                key = (event.topic, event.offset, event.id, event.ts)
                if done.is_set() or key in recent:
                    return  # --count reached, or printed for another TOPIC that matches it
                recent[key] = None
                if len(recent) > RECENT_EVENTS:
                    del recent[next(iter(recent))]
                if args.json:
                    fields: dict[str, Any] = {
                        "topic": event.topic,
                        "offset": event.offset,
                        "id": event.id,
                        "ts": event.ts,
                        "payload": msgspec.Raw(event.raw_payload),
                    }
                    if event.expires_at is not None:
                        fields["expires_at"] = event.expires_at
                    line = encoder.encode(fields).decode()
                else:
                    line = f"{event.topic} {event.offset} {event.raw_payload.decode()}"
                print(line, flush=True)
                seen += 1
                if args.count is not None and seen >= args.count:
                    done.set()

            async def follow(topic: str, task_status: trio.TaskStatus[None]) -> None:
                async with client.subscribe(
                    topic, last_n=args.last_n, filter=content_filter
                ) as subscription:
                    task_status.started()
                    try:
                        async for item in subscription:
                            if isinstance(item, Event):
                                show(item)
                            else:
                                print(f"trio-pubsub: {_gap_text(item)}", file=sys.stderr)
                    except TopicNotFound:
                        raise topic_gone(topic) from None

            async with trio.open_nursery() as nursery:
                nursery.start_soon(stdout_closed)
                for topic in args.topics:
                    await nursery.start(follow, topic)
                await done.wait()
                nursery.cancel_scope.cancel()

    return run_ws(main)
