"""The client-side commands of ``trio-pubsub``: topics, pub, sub, history, stats.

All take ``--url`` / ``PUBSUB_URL`` (default ``http://127.0.0.1:3000``) and
``--api-key`` / ``PUBSUB_API_KEY``. Exit codes: 0 success, 1 the server refused
(unknown topic, bad request, wrong key, ...), 2 bad usage, 3 server unreachable.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any, Final, TextIO
from urllib.parse import urlencode, urlsplit, urlunsplit

import httpx
import msgspec
import trio

from .._protocol.errors import PubSubError
from .._protocol.frames import check_pattern, is_pattern
from ..client import Event, Gap, ServerUnreachable, open_client

EXIT_REFUSED: Final = 1
EXIT_USAGE: Final = 2
EXIT_UNREACHABLE: Final = 3
DEFAULT_URL: Final = "http://127.0.0.1:3000"
#: ``sub`` prints an event that several TOPIC arguments match once: it remembers
#: this many of the latest events it printed. The client hands one event to each
#: matching subscription in turn, so their tasks print the copies a few events
#: apart; this leaves a wide margin.
RECENT_EVENTS: Final = 10_000


class CommandError(Exception):
    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def add_commands(commands: Any) -> None:
    """Add the client commands to the ``trio-pubsub`` sub-parsers."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url",
        default=os.environ.get("PUBSUB_URL", DEFAULT_URL),
        help="the broker's base URL, http(s):// or ws(s):// (env PUBSUB_URL, "
        f"default {DEFAULT_URL})",
    )
    common.add_argument(
        "--api-key",
        default=os.environ.get("PUBSUB_API_KEY") or None,
        help="API key (env PUBSUB_API_KEY)",
    )

    topics = commands.add_parser("topics", help="list, create, delete or show topics")
    actions = topics.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("list", parents=[common], help="list topics").set_defaults(run=_topics_list)
    for action, run, text in (
        ("create", _topics_create, "create a topic"),
        ("delete", _topics_delete, "delete a topic"),
        ("show", _topics_show, "show one topic"),
    ):
        sub = actions.add_parser(action, parents=[common], help=text)
        sub.add_argument("name")
        sub.set_defaults(run=run)

    pub = commands.add_parser(
        "pub",
        parents=[common],
        help="publish messages",
        description="Publish JSON to TOPIC: the JSON argument, or one message per stdin line.",
    )
    pub.add_argument("topic")
    pub.add_argument("json", nargs="?", help="the payload (read stdin lines when omitted)")
    pub.add_argument("--id", help="message id (default: random); only with a JSON argument")
    pub.add_argument(
        "--ttl-ms",
        type=int,
        metavar="N",
        help="each message expires N ms after it is published (replaces the topic's TTL)",
    )
    pub.add_argument("--verbose", "-v", action="store_true", help="print each ack")
    pub.set_defaults(run=_pub)

    sub = commands.add_parser(
        "sub",
        parents=[common],
        help="print events",
        description="Print events, one per line, each naming its topic. A TOPIC may be a "
        "pattern: `*` matches exactly one dot-separated segment, a final `>` one or more "
        "(quote it for the shell: 'orders.>'). An event several TOPICs match is printed once.",
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

    history = commands.add_parser(
        "history",
        parents=[common],
        help="print stored messages",
        description="Print TOPIC's stored messages after an offset, oldest first, one per line.",
    )
    history.add_argument("topic")
    history.add_argument(
        "--since", type=int, default=0, metavar="N", help="only messages after offset N"
    )
    history.add_argument(
        "--limit", type=int, default=100, metavar="L", help="at most L messages (<= 1000)"
    )
    history.add_argument("--json", action="store_true", help="line-delimited JSON (for jq)")
    history.set_defaults(run=_history)

    stats = commands.add_parser("stats", parents=[common], help="show /stats as a table")
    stats.set_defaults(run=_stats)


def run_command(args: argparse.Namespace) -> int:
    """Run a client command; print a clear message and return the exit code on failure."""
    run: Callable[[argparse.Namespace], int] = args.run
    try:
        return run(args)
    except CommandError as exc:
        print(f"trio-pubsub: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


# --------------------------------------------------------------------- REST


def _rest(args: argparse.Namespace, method: str, path: str, body: Any = None) -> Any:
    parts = urlsplit(args.url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    base = urlunsplit((scheme, parts.netloc, "", "", ""))
    headers = {"X-API-Key": args.api_key} if args.api_key else {}
    try:
        response = httpx.request(method, base + path, json=body, headers=headers, timeout=10)
    except httpx.HTTPError as exc:
        raise CommandError(f"cannot reach {base}: {exc}", EXIT_UNREACHABLE) from None
    try:
        data = response.json()
    except ValueError:
        raise CommandError(
            f"unexpected answer from {base}: HTTP {response.status_code}", EXIT_REFUSED
        ) from None
    if response.status_code >= 400:
        raise CommandError(f"{data.get('error')}: {data.get('message')}", EXIT_REFUSED)
    return data


def _table(rows: list[list[str]], out: TextIO) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        out.write(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
        out.write("\n")


def _topics_list(args: argparse.Namespace) -> int:
    topics = _rest(args, "GET", "/topics")["topics"]
    rows = [["NAME", "SUBSCRIBERS", "MESSAGES", "CREATED"]]
    rows += [
        [t["name"], str(t["subscribers"]), str(t["messages"]), t["created_at"]] for t in topics
    ]
    _table(rows, sys.stdout)
    return 0


def _topics_create(args: argparse.Namespace) -> int:
    _rest(args, "POST", "/topics", {"name": args.name})
    print(f"created {args.name}")
    return 0


def _topics_delete(args: argparse.Namespace) -> int:
    _rest(args, "DELETE", f"/topics/{args.name}")
    print(f"deleted {args.name}")
    return 0


def _topics_show(args: argparse.Namespace) -> int:
    topic = _rest(args, "GET", f"/topics/{args.name}")
    _table([[f"{key}:", str(value)] for key, value in topic.items()], sys.stdout)
    return 0


def _history(args: argparse.Namespace) -> int:
    query = urlencode({"since_offset": args.since, "limit": args.limit})
    found = _rest(args, "GET", f"/topics/{args.topic}/messages?{query}")
    for stored in found["messages"]:
        message = stored["message"]
        if args.json:
            line = {"topic": found["topic"], **stored}
            print(msgspec.json.encode(line).decode())
        else:
            payload = msgspec.json.encode(message["payload"]).decode()
            print(f"{stored['offset']}  {stored['ts']}  {message['id']}  {payload}")
    return 0


def _stats(args: argparse.Namespace) -> int:
    stats = _rest(args, "GET", "/stats")
    out = sys.stdout
    delivery = stats["delivery"]
    _table(
        [
            ["uptime", f"{stats['uptime_sec']} s"],
            [
                "connections",
                f"{stats['websocket']['total_clients']} open, "
                f"{stats['websocket']['connection_counter']} ever",
            ],
            ["topics", str(stats["total_topics"])],
            ["subscribers", str(stats["total_subscribers"])],
            ["messages", str(stats["total_messages"])],
            ["delivered", str(delivery["delivered"])],
            ["dropped", str(delivery["dropped"])],
            ["slow consumers", str(delivery["slow_consumer_disconnects"])],
            ["rate limited", str(delivery["rate_limited"])],
            ["memory", f"{stats['memory']['rss_mb']} MB"],
        ],
        out,
    )
    if stats["topics"]:
        out.write("\n")
        rows = [["TOPIC", "MESSAGES", "SUBSCRIBERS", "STORED", "DROPPED"]]
        for name, topic in stats["topics"].items():
            rows.append(
                [name, *(str(topic[k]) for k in ("messages", "subscribers", "stored", "dropped"))]
            )
        _table(rows, out)
    return 0


# ---------------------------------------------------------------- WebSocket


def _ws_url(url: str) -> str:
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    path = parts.path if parts.path.endswith("/ws") else parts.path.rstrip("/") + "/ws"
    return urlunsplit((scheme, parts.netloc, path, parts.query, ""))


def _run_ws(args: argparse.Namespace, main: Callable[[], Any]) -> int:
    try:
        trio.run(main)
    except* ServerUnreachable as group:
        raise CommandError(str(group.exceptions[0]), EXIT_UNREACHABLE) from None
    except* PubSubError as group:
        error = group.exceptions[0]
        assert isinstance(error, PubSubError)
        raise CommandError(f"{error.code.value}: {error.message}", EXIT_REFUSED) from None
    return 0


def _parse_json(text: str) -> msgspec.Raw:
    try:
        msgspec.json.decode(text)
    except msgspec.DecodeError as exc:
        raise CommandError(f"not JSON: {text.strip()[:80]!r} ({exc})", EXIT_USAGE) from None
    return msgspec.Raw(text.strip().encode())


def _pub(args: argparse.Namespace) -> int:
    if args.ttl_ms is not None and args.ttl_ms < 1:
        raise CommandError("--ttl-ms must be at least 1", EXIT_USAGE)
    if args.json is not None:
        payloads: list[msgspec.Raw] | None = [_parse_json(args.json)]
    else:
        if args.id:
            raise CommandError("--id needs a JSON argument", EXIT_USAGE)
        payloads = None

    async def main() -> None:
        async with open_client(_ws_url(args.url), api_key=args.api_key, reconnect=False) as client:

            async def publish(payload: msgspec.Raw, message_id: str | None) -> None:
                ack = await client.publish(args.topic, payload, id=message_id, ttl_ms=args.ttl_ms)
                if args.verbose:
                    print(f"ack topic={ack.topic} offset={ack.offset} id={ack.id}", flush=True)

            if payloads is not None:
                await publish(payloads[0], args.id)
                return
            async for line in trio.wrap_file(sys.stdin):
                if line.strip():
                    await publish(_parse_json(line), None)

    return _run_ws(args, main)


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
        async with open_client(_ws_url(args.url), api_key=args.api_key) as client:
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
                    async for item in subscription:
                        if isinstance(item, Event):
                            show(item)
                        else:
                            print(f"trio-pubsub: {_gap_text(item)}", file=sys.stderr)

            async with trio.open_nursery() as nursery:
                for topic in args.topics:
                    await nursery.start(follow, topic)
                await done.wait()
                nursery.cancel_scope.cancel()

    return _run_ws(args, main)
