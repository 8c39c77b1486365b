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
from bench.scenarios import NAMES, QUICK, RUNNERS, Bench, Options, Row

#: ``slow`` measures the drop policy at work: our server's default outbox bound.
SLOW_QUEUE = 1000


#: Integer lists where 0 means something (``filter_rates``: 0 floods).
ZERO_ALLOWED = frozenset({"filter_rates"})


def _ints(text: str, least: int = 1) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, not {text!r}"
        ) from None
    if not values or min(values) < least:
        wanted = "positive integers" if least == 1 else f"integers >= {least}"
        raise argparse.ArgumentTypeError(f"expected {wanted}, not {text!r}")
    return values


def _naturals(text: str) -> tuple[int, ...]:
    return _ints(text, least=0)


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
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smaller filters and patterns runs (others unchanged): "
        + ", ".join(f"{name.replace('_', '-')} {value}" for name, value in QUICK.items()),
    )
    for field in fields(Options):
        flag = "--" + field.name.replace("_", "-")
        default = getattr(defaults, field.name)
        # None: not given (so --quick can tell); replaced by the default after parsing.
        if isinstance(default, tuple):
            kind = _naturals if field.name in ZERO_ALLOWED else _ints
            parser.add_argument(flag, type=kind, default=None, help=f"default {default}")
        else:
            parser.add_argument(flag, type=type(default), default=None, help=f"default {default}")
    args = parser.parse_args(list(argv))
    for field in fields(Options):
        if getattr(args, field.name) is None:
            quick = args.quick and field.name in QUICK
            setattr(args, field.name, QUICK[field.name] if quick else getattr(defaults, field.name))
    return args


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
