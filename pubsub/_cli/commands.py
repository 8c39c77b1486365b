"""The client-side commands of ``trio-pubsub``: topics, pub, sub, stats.

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
from ..client import Event, ServerUnreachable, open_client

EXIT_REFUSED: Final = 1
EXIT_USAGE: Final = 2
EXIT_UNREACHABLE: Final = 3
DEFAULT_URL: Final = "http://127.0.0.1:3000"


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
    pub.add_argument("--verbose", "-v", action="store_true", help="print each ack")
    pub.set_defaults(run=_pub)

    sub = commands.add_parser(
        "sub", parents=[common], help="print events", description="Print events, one per line."
    )
    sub.add_argument("topics", nargs="+", metavar="TOPIC")
    sub.add_argument("--last-n", type=int, default=0, help="replay this many stored messages")
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
    if args.json is not None:
        payloads: list[msgspec.Raw] | None = [_parse_json(args.json)]
    else:
        if args.id:
            raise CommandError("--id needs a JSON argument", EXIT_USAGE)
        payloads = None

    async def main() -> None:
        async with open_client(_ws_url(args.url), api_key=args.api_key, reconnect=False) as client:

            async def publish(payload: msgspec.Raw, message_id: str | None) -> None:
                ack = await client.publish(args.topic, payload, id=message_id)
                if args.verbose:
                    print(f"ack topic={ack.topic} offset={ack.offset} id={ack.id}", flush=True)

            if payloads is not None:
                await publish(payloads[0], args.id)
                return
            async for line in trio.wrap_file(sys.stdin):
                if line.strip():
                    await publish(_parse_json(line), None)

    return _run_ws(args, main)


def _sub(args: argparse.Namespace) -> int:
    if args.count is not None and args.count < 1:
        raise CommandError("--count must be at least 1", EXIT_USAGE)
    if args.last_n < 0:
        raise CommandError("--last-n must be at least 0", EXIT_USAGE)
    encoder = msgspec.json.Encoder()

    async def main() -> None:
        async with open_client(_ws_url(args.url), api_key=args.api_key) as client:
            seen = 0
            done = trio.Event()

            async def follow(topic: str, task_status: trio.TaskStatus[None]) -> None:
                nonlocal seen
                async with client.subscribe(topic, last_n=args.last_n) as subscription:
                    task_status.started()
                    async for item in subscription:
                        if not isinstance(item, Event):
                            print(
                                f"trio-pubsub: {item.topic}: missed messages after offset "
                                f"{item.after_offset} ({item.reason})",
                                file=sys.stderr,
                            )
                            continue
                        if args.json:
                            line = encoder.encode(
                                {
                                    "topic": item.topic,
                                    "offset": item.offset,
                                    "id": item.id,
                                    "ts": item.ts,
                                    "payload": msgspec.Raw(item.raw_payload),
                                }
                            ).decode()
                        else:
                            line = f"{item.topic} {item.offset} {item.raw_payload.decode()}"
                        print(line, flush=True)
                        seen += 1
                        if args.count is not None and seen >= args.count:
                            done.set()
                            return

            async with trio.open_nursery() as nursery:
                for topic in args.topics:
                    await nursery.start(follow, topic)
                await done.wait()
                nursery.cancel_scope.cancel()

    return _run_ws(args, main)
