"""The client-side commands of ``trio-pubsub``: topics, pub, sub, history, stats, check.

All take ``--url`` / ``PUBSUB_URL`` (default ``http://127.0.0.1:3000``) and
``--api-key`` / ``PUBSUB_API_KEY``. Exit codes (:mod:`pubsub._cli.exits`): 0
success, 1 the server refused (unknown topic, bad request, wrong key, ...) or
``check`` found it unhealthy, 2 bad usage, 3 server unreachable, 130 Ctrl-C. A
reader that goes away (``| head``) ends a command quietly with 0.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import msgspec

from .exits import EXIT_OK, CommandError
from .messages import add_pub, add_sub
from .monitor import add_monitor, table
from .remote import DEFAULT_URL, check_url, read_key, rest


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
    common.add_argument(
        "--api-key-file",
        metavar="FILE",
        default=os.environ.get("PUBSUB_API_KEY_FILE") or None,
        help="read the API key from FILE, keeping it off the command line "
        "(env PUBSUB_API_KEY_FILE)",
    )

    topics = commands.add_parser("topics", help="list, create, delete or show topics")
    actions = topics.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", parents=[common], help="list topics")
    listing.add_argument(
        "--json", action="store_true", help="one JSON object per topic and line (for jq)"
    )
    listing.set_defaults(run=_topics_list)
    for action, run, text in (
        ("create", _topics_create, "create a topic"),
        ("delete", _topics_delete, "delete a topic"),
        ("show", _topics_show, "show one topic"),
    ):
        sub = actions.add_parser(action, parents=[common], help=text)
        sub.add_argument("name")
        sub.set_defaults(run=run)

    add_pub(commands, common)
    add_sub(commands, common)

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

    add_monitor(commands, common)


def run_command(args: argparse.Namespace) -> int:
    """Run a client command; print a clear message and return the exit code on failure."""
    run: Callable[[argparse.Namespace], int] = args.run
    # What the client library warns about (a reconnect failed, ...) reads like
    # the command's own messages.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("trio-pubsub: %(message)s"))
    library = logging.getLogger("pubsub")
    library.addHandler(handler)
    library.setLevel(logging.WARNING)
    try:
        check_url(args.url)
        if args.api_key_file is not None:
            args.api_key = read_key(args.api_key_file)
        return run(args)
    except CommandError as exc:
        print(f"trio-pubsub: {exc}", file=sys.stderr)
        return exc.exit_code


def _topics_list(args: argparse.Namespace) -> int:
    topics = rest(args, "GET", "/topics")["topics"]
    if args.json:
        for topic in topics:
            print(msgspec.json.encode(topic).decode())
        return EXIT_OK
    rows = [["NAME", "SUBSCRIBERS", "MESSAGES", "CREATED"]]
    rows += [
        [t["name"], str(t["subscribers"]), str(t["messages"]), t["created_at"]] for t in topics
    ]
    table(rows, sys.stdout)
    return EXIT_OK


def _topics_create(args: argparse.Namespace) -> int:
    rest(args, "POST", "/topics", {"name": args.name})
    print(f"created {args.name}")
    return EXIT_OK


def _topics_delete(args: argparse.Namespace) -> int:
    rest(args, "DELETE", f"/topics/{args.name}")
    print(f"deleted {args.name}")
    return EXIT_OK


def _topics_show(args: argparse.Namespace) -> int:
    topic = rest(args, "GET", f"/topics/{args.name}")
    table([[f"{key}:", str(value)] for key, value in topic.items()], sys.stdout)
    return EXIT_OK


def _history(args: argparse.Namespace) -> int:
    query = urlencode({"since_offset": args.since, "limit": args.limit})
    found = rest(args, "GET", f"/topics/{args.topic}/messages?{query}")
    for stored in found["messages"]:
        message = stored["message"]
        if args.json:
            line = {"topic": found["topic"], **stored}
            print(msgspec.json.encode(line).decode())
        else:
            payload = msgspec.json.encode(message["payload"]).decode()
            print(f"{stored['offset']}  {stored['ts']}  {message['id']}  {payload}")
    return EXIT_OK
