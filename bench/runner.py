"""The end-to-end runner: ``python -m bench fanout latency ... [--peers redis,nats] ...``.

For each scenario named, in order, each server (ours, then each available peer) is
started fresh (pinned to the server core), driven by load processes (pinned to the load
core) and stopped. Output: Markdown tables on stdout, JSON and a PNG under
``bench/results/``. The exit status is 1 when a run failed to complete (loss is
reported, never a failure: benchmarks report numbers).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import fields

from bench.peers import LIMIT, PEERS, PubSub, Server, make_peer, unavailable
from bench.procs import BenchError, Processes, Progress, make_pinning, managed, raise_fd_limit
from bench.report import chart, checklist, machine, markdown, stem, write_json
from bench.scenarios import NAMES, RUNNERS, Bench, Options, Row

#: ``slow`` measures the drop policy at work: our server's default outbox bound.
SLOW_QUEUE = 1000


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, not {text!r}"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, not {text!r}")
    return values


def _peers(text: str) -> tuple[str, ...]:
    values = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [value for value in values if value not in PEERS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown peer {unknown[0]!r}; known: {', '.join(PEERS)}")
    return values


def parse(argv: Sequence[str]) -> argparse.Namespace:
    defaults = Options()
    parser = argparse.ArgumentParser(prog="python -m bench " + " ".join(NAMES))
    parser.add_argument("--peers", type=_peers, default=PEERS, help="peers to run (redis,nats)")
    parser.add_argument("--no-peers", dest="peers", action="store_const", const=())
    parser.add_argument("--target", help="drive this server (ws://127.0.0.1:PORT/ws) instead")
    parser.add_argument("--target-pid", type=int, help="the --target server's PID, for CPU/RSS")
    parser.add_argument("--no-chart", action="store_true", help="skip the PNG")
    for field in fields(Options):
        flag = "--" + field.name.replace("_", "-")
        default = getattr(defaults, field.name)
        if isinstance(default, tuple):
            parser.add_argument(flag, type=_ints, default=default, help=f"default {default}")
        else:
            parser.add_argument(
                flag, type=type(default), default=default, help=f"default {default}"
            )
    return parser.parse_args(list(argv))


def main(names: Sequence[str], argv: Sequence[str]) -> int:
    args = parse(argv)
    options = Options(**{field.name: getattr(args, field.name) for field in fields(Options)})
    raise_fd_limit(LIMIT)
    pinning = make_pinning()
    progress = Progress()
    rows: list[Row] = []
    notes = [f"pinning: {pinning.note}"]
    peers = []
    for peer in args.peers:
        reason = unavailable(peer)
        if reason:
            notes.append(f"{peer}: not available ({reason})")
        else:
            peers.append(peer)
    versions: dict[str, str] = {}
    failed = False
    ours = "trio-pubsub"
    try:
        with managed() as procs:
            bench = Bench(options, procs, pinning, progress)
            for scenario in names:
                queue = min(options.max_queue_size, SLOW_QUEUE) if scenario == "slow" else None
                for kind in ("ours", *peers):
                    server = make_server(kind, procs, bench, args, queue)
                    ours = server.name if kind == "ours" else ours
                    try:
                        server.start()
                        versions.setdefault(server.name, server.version())
                        rows += RUNNERS[scenario](bench, server)
                    except BenchError as exc:
                        failed = True
                        progress.done(f"{scenario} {server.name}: FAILED: {exc}")
                        notes.append(f"{scenario} {server.name}: FAILED: {exc}")
                    finally:
                        server.stop()
    except KeyboardInterrupt:
        progress.done("interrupted; every process started was stopped")
        return 130
    servers = [ours, *peers]
    name = stem(names)
    picture = chart(name, rows, servers) if not args.no_chart else "skipped (--no-chart)"
    notes.append(f"chart: {picture}")
    checks = checklist(rows, ours)
    path = write_json(
        name,
        {
            "scenarios": list(names),
            "machine": machine(pinning.note, versions),
            "options": {field.name: getattr(options, field.name) for field in fields(Options)},
            "peers": peers,
            "target": args.target,
            "rows": rows,
            "checklist": checks,
            "notes": notes,
        },
    )
    notes.append(f"results: {path}")
    print(markdown(rows, servers, notes))
    if checks:
        print("### check-list\n")
        print("\n".join(f"- {line}" for line in checks))
    return 1 if failed else 0


def make_server(
    kind: str, procs: Processes, bench: Bench, args: argparse.Namespace, queue: int | None
) -> Server:
    if kind != "ours":
        return make_peer(kind, procs, bench.pinning)
    return PubSub(
        procs,
        bench.pinning,
        max_queue_size=queue or bench.options.max_queue_size,
        target=args.target,
        target_pid=args.target_pid,
    )
