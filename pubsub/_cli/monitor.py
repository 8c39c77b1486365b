"""``stats`` (a table, JSON, or a refreshing view) and ``check`` (health-check scripts)."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any, Final, TextIO

import httpx
import msgspec

from .exits import EXIT_OK, EXIT_REFUSED, EXIT_USAGE, CommandError
from .remote import headers, http_base, rest

#: Seconds between ``stats --watch`` refreshes unless ``--interval`` says.
WATCH_INTERVAL: Final = 1.0
#: ``stats --watch`` repeats its header after this many lines (as vmstat does).
HEADER_EVERY: Final = 20
#: Seconds ``check`` waits to connect, and then for the answer, unless ``--timeout`` says.
CHECK_TIMEOUT: Final = 5.0


def add_monitor(commands: Any, common: argparse.ArgumentParser) -> None:
    stats = commands.add_parser(
        "stats",
        parents=[common],
        help="show /stats",
        description="Show /stats as a table, as JSON, or (--watch) as one line per refresh "
        "with rates, like redis-cli --stat.",
    )
    stats.add_argument("--json", action="store_true", help="the /stats object as one JSON line")
    stats.add_argument(
        "--watch",
        "-w",
        action="store_true",
        help="print one line per refresh until Ctrl-C (with --json: one object per line)",
    )
    stats.add_argument(
        "--interval",
        type=float,
        default=WATCH_INTERVAL,
        metavar="SECONDS",
        help=f"seconds between refreshes (default {WATCH_INTERVAL:g})",
    )
    stats.add_argument(
        "--count", type=int, metavar="N", help="with --watch: stop after N refreshes"
    )
    stats.set_defaults(run=_stats)

    check = commands.add_parser(
        "check",
        parents=[common],
        help="check the broker's health (exit 0 ok, 1 not)",
        description="GET /health and print one line: exit 0 when the broker answers "
        '"ok", 1 when it is draining, its engine is unavailable, it cannot be reached, '
        "or it does not answer in time.",
    )
    check.add_argument(
        "--timeout",
        type=float,
        default=CHECK_TIMEOUT,
        metavar="SECONDS",
        help=f"seconds to connect, and then to answer (default {CHECK_TIMEOUT:g})",
    )
    check.set_defaults(run=_check)


# -------------------------------------------------------------------- stats


def table(rows: list[list[str]], out: TextIO) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        out.write(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
        out.write("\n")


def _stats(args: argparse.Namespace) -> int:
    if args.count is not None and not args.watch:
        raise CommandError("--count needs --watch", EXIT_USAGE)
    if args.count is not None and args.count < 1:
        raise CommandError("--count must be at least 1", EXIT_USAGE)
    if not args.interval > 0:
        raise CommandError("--interval must be more than 0 seconds", EXIT_USAGE)
    if args.watch:
        return _watch(args)
    stats = rest(args, "GET", "/stats")
    if args.json:
        print(msgspec.json.encode(stats).decode())
    else:
        _stats_table(stats, sys.stdout)
    return EXIT_OK


def _stats_table(stats: dict[str, Any], out: TextIO) -> None:
    delivery = stats["delivery"]
    table(
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
        table(rows, out)


#: ``stats --watch`` columns: header, width.
_COLUMNS: Final = (
    ("TIME", 8),
    ("CONNECTIONS", 11),
    ("TOPICS", 6),
    ("SUBSCRIBERS", 11),
    ("MESSAGES", 10),
    ("MSG/S", 9),
    ("DELIVERED/S", 11),
    ("DROPPED/S", 9),
    ("RSS_MB", 8),
)


def _row(cells: list[str]) -> str:
    """Cells in the columns: the time left-aligned, figures right-aligned."""
    aligned = [
        cell.ljust(width) if index == 0 else cell.rjust(width)
        for index, (cell, (_, width)) in enumerate(zip(cells, _COLUMNS, strict=True))
    ]
    return "  ".join(aligned)


def _watch_line(stats: dict[str, Any], before: dict[str, Any] | None, seconds: float) -> str:
    """One refresh: totals, and rates over the ``seconds`` since ``before`` (none
    on the first line)."""

    def rate(now: int, then: int) -> str:
        if before is None or seconds <= 0:
            return "-"
        return f"{max(0, now - then) / seconds:.1f}"  # a deleted topic lowers the total

    earlier = before or stats
    return _row(
        [
            time.strftime("%H:%M:%S"),
            str(stats["websocket"]["total_clients"]),
            str(stats["total_topics"]),
            str(stats["total_subscribers"]),
            str(stats["total_messages"]),
            rate(stats["total_messages"], earlier["total_messages"]),
            rate(stats["delivery"]["delivered"], earlier["delivery"]["delivered"]),
            rate(stats["delivery"]["dropped"], earlier["delivery"]["dropped"]),
            f"{stats['memory']['rss_mb']:.1f}",
        ]
    )


def _watch(args: argparse.Namespace) -> int:
    """One line per refresh until Ctrl-C or ``--count``."""
    before: dict[str, Any] | None = None
    before_at = started = time.monotonic()
    refresh = 0
    while args.count is None or refresh < args.count:
        if refresh:
            # On a fixed schedule: a slow answer does not push later refreshes back.
            time.sleep(max(0.0, started + refresh * args.interval - time.monotonic()))
        stats = rest(args, "GET", "/stats")
        taken = time.monotonic()
        if args.json:
            print(msgspec.json.encode(stats).decode(), flush=True)
        else:
            if refresh % HEADER_EVERY == 0:
                print(_row([name for name, _ in _COLUMNS]))
            print(_watch_line(stats, before, taken - before_at), flush=True)
        before, before_at = stats, taken
        refresh += 1
    return EXIT_OK


# -------------------------------------------------------------------- check


def _check(args: argparse.Namespace) -> int:
    """Print one line: ``ok: ...``, or what is wrong; exit 0 or 1."""
    if not args.timeout > 0:
        raise CommandError("--timeout must be more than 0 seconds", EXIT_USAGE)
    base = http_base(args.url)
    try:
        response = httpx.get(base + "/health", headers=headers(args), timeout=args.timeout)
    except httpx.TimeoutException:
        print(f"unreachable: {base} did not answer within {args.timeout:g} s")
        return EXIT_REFUSED
    except httpx.HTTPError as exc:
        print(f"unreachable: cannot reach {base}: {exc}")
        return EXIT_REFUSED
    try:
        body = response.json()
    except ValueError:
        body = None
    health: dict[str, Any] = body if isinstance(body, dict) else {}
    status = health.get("status")
    engine = health.get("engine") if isinstance(health.get("engine"), dict) else {}
    assert isinstance(engine, dict)
    kind = engine.get("kind", "?")
    if response.status_code == 200 and status == "ok":
        print(
            f"ok: {base} ({kind} engine, {health.get('topics')} topics, "
            f"{health.get('subscribers')} subscribers, up {health.get('uptime_sec')} s)"
        )
        return EXIT_OK
    why = {
        "draining": "shutting down",
        "unavailable": f"its {kind} engine cannot be reached",
    }.get(str(status), "not a trio-pubsub /health answer")
    print(f"{status or 'failing'}: {base} answered HTTP {response.status_code} ({why})")
    return EXIT_REFUSED
