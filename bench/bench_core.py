"""Core fan-out: broker CPU microseconds per delivery, in process, no sockets.

For each subscriber count S, one ``trio.run`` opens a broker, a topic, S
subscribed sessions and one publisher session. S drain tasks stand in for the
socket writers: each loops on :meth:`Session.next_batch` and counts the event
frames it takes. The publisher feeds N pre-decoded ``Publish`` frames to
:meth:`Broker.handle` (a task drains its acks). CPU time
(``time.process_time``) and wall time run from the first publish until every
drain task has counted N events and the publisher N acks.

By default the publisher floods: it only waits when the topic's inbox is
full, so the topic fans out runs of up to ``MAX_BATCH`` messages and each drain
takes hundreds of frames per wake-up (the best case). ``paced=True``
(``--paced``) makes the publisher yield after every publish, so each message
is fanned out nearly alone and every delivery pays for a writer wake-up (the
worst case; a publisher that is not flooding looks like this).

The baseline, in the same run, is the floor of pure-Python fan-out: for each
message, for each of S ``collections.deque``, append one pre-built frame; after
as many messages as the broker run's mean batch, each deque is drained by
swapping in a new one (as ``next_batch`` does).

Counts are checked without slowing the hot path: a drain adds ``len(batch)``
and checks that the ``offset`` of the last frame of every 16th and of the
final batch equals its running count, so a lost, duplicated or foreign frame
shows up as an offset mismatch and in the per-subscriber totals.
``full_check=True`` (the smoke test) decodes and checks every frame instead.

``python -m bench core [--quick] [--sizes 1,100,1000] [--deliveries N] ...``
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import platform
import subprocess
import sys
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Final, TypedDict

import msgspec
import trio
import trio.testing

import pubsub
from pubsub import Settings
from pubsub._core.node import MAX_BATCH, open_node
from pubsub._core.session import CloseReason, Session
from pubsub._engines.memory import MemoryEngine
from pubsub._protocol.frames import (
    Ack,
    Event,
    Message,
    Publish,
    decode_client_frame,
    decode_server_frame,
    encode,
)
from pubsub._protocol.timestamps import ts_now

TOPIC: Final = "bench"
SIZES: Final = (1, 100, 1000)
#: S*N aimed at per subscriber count; N = TARGET_DELIVERIES // S, clamped.
TARGET_DELIVERIES: Final = 3_000_000
MIN_MESSAGES: Final = 1_000
MAX_MESSAGES: Final = 500_000
#: Wall-clock cap of one broker run: the publisher stops early when it is reached.
MAX_SECONDS: Final = 20.0
#: Outboxes never overflow: the benchmark measures fan-out, not the drop policy.
MAX_QUEUE_SIZE: Final = 100_000_000
TOPIC_INBOX_SIZE: Final = 1024
PAYLOAD_BYTES: Final = 64
#: Distinct pre-decoded Publish frames, used in turn (a power of two).
FRAME_POOL: Final = 1024
RESULTS_DIR: Final = Path(__file__).resolve().parent / "results"

_OFFSET_KEY: Final = b',"offset":'


class CoreRow(TypedDict):
    """One subscriber count: the broker run, its baseline and the checks."""

    subscribers: int
    messages: int
    #: Events handed to drain tasks (subscribers * messages when exact).
    deliveries: int
    expected_deliveries: int
    events_received: int
    acks_received: int
    #: Events missing / in excess, summed over subscribers.
    lost: int
    duplicated: int
    #: Checked batches (every 16th and the last of each drain) whose last frame
    #: did not carry the expected offset; with ``full_check``, frames that were
    #: not the expected event or ack.
    order_errors: int
    #: Events the broker says it dropped from full outboxes (should be 0).
    broker_dropped: int
    exact: bool
    #: The publisher stopped at the wall-clock cap before N messages.
    capped: bool
    #: The run ended at the cap before every drain had its count.
    timed_out: bool
    batches: int
    mean_batch: float
    broker_cpu_s: float
    broker_wall_s: float
    broker_us_per_delivery: float
    broker_wall_us_per_delivery: float
    deliveries_per_s: float
    baseline_cpu_s: float
    baseline_us_per_delivery: float
    baseline_deliveries_per_s: float
    ratio: float
    #: The baseline swaps its deques out every this many messages (the broker's mean batch).
    baseline_drain_every: int
    #: The publisher yielded after every publish (see the module docstring).
    paced: bool
    repeats: int
    #: us/delivery of every repeat, in run order.
    broker_us_runs: list[float]
    baseline_us_runs: list[float]


class _Broker(TypedDict):
    messages: int
    counts: list[int]
    acks: int
    order_errors: int
    broker_dropped: int
    capped: bool
    timed_out: bool
    batches: int
    cpu_s: float
    wall_s: float


class _Run:
    """Completion tracking shared by the drain tasks (one slot per drain, the last is acks)."""

    def __init__(self, parties: int, target: int) -> None:
        self.target = target
        self.counts = [0] * parties
        self.batches = [0] * parties
        self.errors = [0] * parties
        self.arrived = [False] * parties
        self.pending = parties
        self.done = trio.Event()
        self.cpu_start = self.cpu_end = 0.0
        self.wall_start = self.wall_end = 0.0

    def start(self) -> None:
        self.wall_start = time.perf_counter()
        self.cpu_start = time.process_time()

    def retarget(self, target: int) -> None:
        """The publisher stopped early: wait for ``target`` instead."""
        self.target = target
        for index, count in enumerate(self.counts):
            if count >= target and not self.arrived[index]:
                self.arrive(index)

    def arrive(self, index: int) -> None:
        """Drain ``index`` has its count; the last one to arrive stops the clocks."""
        self.arrived[index] = True
        self.pending -= 1
        if self.pending == 0:
            self.cpu_end = time.process_time()
            self.wall_end = time.perf_counter()
            self.done.set()


def _offset_of(frame: bytes) -> int:
    """The ``offset`` of an event or ack frame, or -1 (the payload never contains the key)."""
    start = frame.rfind(_OFFSET_KEY)
    if start < 0:
        return -1
    start += len(_OFFSET_KEY)
    try:
        return int(frame[start : frame.index(b",", start)])
    except ValueError:
        return -1


async def _drain(
    session: Session, index: int, run: _Run, kind: type[Event | Ack], full_check: bool
) -> None:
    """Stand-in for a socket writer: take batches until the session closes.

    Kept light, as it runs once per batch inside the measurement: it counts
    frames and checks the offset of the last frame of every 16th batch and
    of the final one (a lost or duplicated frame shifts every later offset).
    """
    counts = run.counts
    arrived = run.arrived
    count = batches = errors = 0
    last = b""
    while True:
        batch = await session.next_batch()
        if not batch:
            break
        batches += 1
        if full_check:
            for frame in batch:
                count += 1
                decoded = decode_server_frame(frame)
                if not isinstance(decoded, kind) or decoded.offset != count:
                    errors += 1
        else:
            count += len(batch)
            last = batch[-1]
            if not batches & 15 and _offset_of(last) != count:
                errors += 1
        counts[index] = count
        if count >= run.target and not arrived[index]:
            run.arrive(index)
    if last and _offset_of(last) != count:
        errors += 1
    run.batches[index] = batches
    run.errors[index] = errors


def _publish_frames(payload_bytes: int) -> list[Publish]:
    """FRAME_POOL Publish frames, decoded once as the transport's reader would."""
    frames: list[Publish] = []
    for i in range(FRAME_POOL):
        raw = msgspec.json.encode(
            {
                "type": "publish",
                "topic": TOPIC,
                "client_id": "bench-publisher",
                "request_id": i,
                "message": {"id": f"m-{i}", "payload": {"seq": i, "data": "x" * payload_bytes}},
            }
        )
        frame = decode_client_frame(raw)
        assert type(frame) is Publish
        frames.append(frame)
    return frames


async def _broker_fanout(
    subscribers: int,
    messages: int,
    *,
    settings: Settings,
    max_seconds: float,
    full_check: bool,
    payload_bytes: int,
    paced: bool,
) -> _Broker:
    engine = MemoryEngine(
        max_topics=settings.max_topics, max_messages=settings.max_messages_per_topic
    )
    async with open_node(settings, engine) as broker:
        await broker.create_topic(TOPIC)
        subscribe = decode_client_frame(
            msgspec.json.encode(
                {"type": "subscribe", "topic": TOPIC, "client_id": "bench", "request_id": "s"}
            )
        )
        sessions = [broker.open_session() for _ in range(subscribers)]
        for session in sessions:
            await broker.handle(session, subscribe)
        for session in sessions:  # take each subscribe ack before the clock starts
            ack = [decode_server_frame(frame) for frame in await session.next_batch()]
            assert len(ack) == 1 and type(ack[0]) is Ack, ack
        publisher = broker.open_session()
        frames = _publish_frames(payload_bytes)
        mask = FRAME_POOL - 1
        handle = broker.handle
        run = _Run(subscribers + 1, messages)
        try:
            async with trio.open_nursery() as nursery:
                for index, session in enumerate(sessions):
                    nursery.start_soon(_drain, session, index, run, Event, full_check)
                nursery.start_soon(_drain, publisher, subscribers, run, Ack, full_check)
                await trio.testing.wait_all_tasks_blocked()
                gc.collect()
                gc.freeze()
                run.start()
                deadline = run.wall_start + max_seconds
                published = 0
                while published < messages:
                    await handle(publisher, frames[published & mask])
                    published += 1
                    if paced:
                        await trio.lowlevel.checkpoint()
                    if not published & 1023 and time.perf_counter() > deadline:
                        break
                if published < messages:
                    run.retarget(published)
                with trio.move_on_after(max(1.0, deadline - time.perf_counter())):
                    await run.done.wait()
                timed_out = not run.done.is_set()
                if timed_out:
                    run.cpu_end = time.process_time()
                    run.wall_end = time.perf_counter()
                for session in [*sessions, publisher]:
                    session.close(CloseReason(1000, "benchmark done"))
        finally:
            gc.unfreeze()
        for session in [*sessions, publisher]:
            broker.close_session(session)
        return _Broker(
            messages=published,
            counts=run.counts[:subscribers],
            acks=run.counts[subscribers],
            order_errors=sum(run.errors),
            broker_dropped=broker.counters.dropped,
            capped=published < messages,
            timed_out=timed_out,
            batches=sum(run.batches[:subscribers]),
            cpu_s=run.cpu_end - run.cpu_start,
            wall_s=run.wall_end - run.wall_start,
        )


def _baseline_fanout(
    subscribers: int, messages: int, frame: bytes, max_seconds: float, drain_every: int
) -> tuple[float, int]:
    """Pure-Python fan-out of ``messages`` to ``subscribers`` deques, each swapped out
    every ``drain_every`` messages: (CPU seconds, deliveries)."""
    queues: list[deque[bytes]] = [deque() for _ in range(subscribers)]
    counts = [0] * subscribers
    indices = range(subscribers)
    gc.collect()
    gc.freeze()
    try:
        cpu_start = time.process_time()
        deadline = time.perf_counter() + max_seconds
        sent = 0
        while sent < messages and time.perf_counter() < deadline:
            chunk = min(drain_every, messages - sent)
            for _ in range(chunk):
                for queue in queues:
                    queue.append(frame)
            sent += chunk
            for index in indices:  # the writers: swap each outbox out
                queue = queues[index]
                queues[index] = deque()
                counts[index] += len(queue)
        cpu = time.process_time() - cpu_start
    finally:
        gc.unfreeze()
    return cpu, sum(counts)


def _event_frame(payload_bytes: int) -> bytes:
    """An event frame the size of the ones the broker builds."""
    payload = msgspec.Raw(msgspec.json.encode({"seq": 0, "data": "x" * payload_bytes}))
    message = Message(id="m-0", payload=payload)
    return encode(Event(topic=TOPIC, message=message, offset=1, ts=ts_now()))


def messages_for(subscribers: int, target_deliveries: int = TARGET_DELIVERIES) -> int:
    """N for S subscribers: S*N close to ``target_deliveries``, N within the bounds."""
    return max(MIN_MESSAGES, min(MAX_MESSAGES, target_deliveries // max(1, subscribers)))


def run_core(
    sizes: Sequence[int] = SIZES,
    messages: int | None = None,
    *,
    target_deliveries: int = TARGET_DELIVERIES,
    max_seconds: float = MAX_SECONDS,
    topic_inbox_size: int = TOPIC_INBOX_SIZE,
    payload_bytes: int = PAYLOAD_BYTES,
    full_check: bool = False,
    warmup: bool = True,
    baseline: bool = True,
    repeats: int = 1,
    paced: bool = False,
) -> list[CoreRow]:
    """Run the broker and the baseline for each subscriber count; one row each.

    Args:
        sizes: Subscriber counts.
        messages: N for every size; by default :func:`messages_for` each size.
        max_seconds: Wall-clock cap of each broker run (and each baseline).
        full_check: Decode and check every frame (slow; for tests).
        warmup: First run a small untimed broker fan-out.
        baseline: Also run the pure-Python baseline (else its columns are 0).
        repeats: Runs per size; the row is the run with the median broker cost
            (the baseline column is the median baseline) and is ``exact`` only
            if every run was.
        paced: The publisher yields after every publish (tiny batches, worst
            case) instead of flooding the topic's inbox.
    """
    settings = Settings(max_queue_size=MAX_QUEUE_SIZE, topic_inbox_size=topic_inbox_size)
    frame = _event_frame(payload_bytes)

    def broker_run(subscribers: int, n: int) -> _Broker:
        return trio.run(
            lambda: _broker_fanout(
                subscribers,
                n,
                settings=settings,
                max_seconds=max_seconds,
                full_check=full_check,
                payload_bytes=payload_bytes,
                paced=paced,
            )
        )

    if warmup:
        broker_run(2, 2_000)
    rows: list[CoreRow] = []
    for subscribers in sizes:
        n = messages if messages is not None else messages_for(subscribers, target_deliveries)
        runs: list[CoreRow] = []
        for _ in range(max(1, repeats)):
            result = broker_run(subscribers, n)
            mean_batch = sum(result["counts"]) / max(1, result["batches"])
            drain_every = max(1, round(mean_batch))
            if baseline:
                base = _baseline_fanout(
                    subscribers, result["messages"], frame, max_seconds, drain_every
                )
            else:
                base = (0.0, 0)
            runs.append(_row(subscribers, result, *base, drain_every, paced))
        rows.append(_median_row(runs))
    return rows


def _row(
    subscribers: int,
    result: _Broker,
    base_cpu: float,
    base_deliveries: int,
    drain_every: int,
    paced: bool,
) -> CoreRow:
    published = result["messages"]
    expected = subscribers * published
    received = sum(result["counts"])
    lost = sum(max(0, published - count) for count in result["counts"])
    duplicated = sum(max(0, count - published) for count in result["counts"])
    deliveries = max(1, received)
    broker_us = result["cpu_s"] * 1e6 / deliveries
    base_us = base_cpu * 1e6 / base_deliveries if base_deliveries else 0.0
    return CoreRow(
        subscribers=subscribers,
        messages=published,
        deliveries=received,
        expected_deliveries=expected,
        events_received=received,
        acks_received=result["acks"],
        lost=lost,
        duplicated=duplicated,
        order_errors=result["order_errors"],
        broker_dropped=result["broker_dropped"],
        exact=(
            received == expected
            and lost == 0
            and duplicated == 0
            and result["acks"] == published
            and result["order_errors"] == 0
            and result["broker_dropped"] == 0
            and not result["timed_out"]
        ),
        capped=result["capped"],
        timed_out=result["timed_out"],
        batches=result["batches"],
        mean_batch=received / max(1, result["batches"]),
        broker_cpu_s=result["cpu_s"],
        broker_wall_s=result["wall_s"],
        broker_us_per_delivery=broker_us,
        broker_wall_us_per_delivery=result["wall_s"] * 1e6 / deliveries,
        deliveries_per_s=received / result["wall_s"] if result["wall_s"] > 0 else 0.0,
        baseline_cpu_s=base_cpu,
        baseline_us_per_delivery=base_us,
        baseline_deliveries_per_s=1e6 / base_us if base_us > 0 else 0.0,
        ratio=broker_us / base_us if base_us > 0 else 0.0,
        baseline_drain_every=drain_every,
        paced=paced,
        repeats=1,
        broker_us_runs=[broker_us],
        baseline_us_runs=[base_us],
    )


def _median_row(runs: Sequence[CoreRow]) -> CoreRow:
    """The run with the median broker cost, with the baseline's median; exact only if all were."""
    ordered = sorted(runs, key=lambda run: run["broker_us_per_delivery"])
    row = CoreRow(**ordered[(len(ordered) - 1) // 2])
    base_runs = sorted(runs, key=lambda run: run["baseline_us_per_delivery"])
    base = base_runs[(len(base_runs) - 1) // 2]
    row["baseline_cpu_s"] = base["baseline_cpu_s"]
    row["baseline_us_per_delivery"] = base_us = base["baseline_us_per_delivery"]
    row["baseline_deliveries_per_s"] = base["baseline_deliveries_per_s"]
    row["baseline_drain_every"] = base["baseline_drain_every"]
    row["ratio"] = row["broker_us_per_delivery"] / base_us if base_us > 0 else 0.0
    row["exact"] = all(run["exact"] for run in runs)
    row["repeats"] = len(runs)
    row["broker_us_runs"] = [run["broker_us_per_delivery"] for run in runs]
    row["baseline_us_runs"] = [run["baseline_us_per_delivery"] for run in runs]
    return row


# ------------------------------------------------------------------ reporting


def markdown_table(rows: Sequence[CoreRow]) -> str:
    lines = [
        "| subscribers | deliveries | broker us/delivery | deliveries/s "
        "| baseline us/delivery | ratio |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['subscribers']} | {row['deliveries']:,} "
            f"| {row['broker_us_per_delivery']:.3f} | {row['deliveries_per_s']:,.0f} "
            f"| {row['baseline_us_per_delivery']:.3f} | {row['ratio']:.1f}x |"
        )
    return "\n".join(lines)


def check_lines(rows: Sequence[CoreRow]) -> list[str]:
    lines = []
    for row in rows:
        status = "exact" if row["exact"] else "MISMATCH"
        notes = []
        if row["capped"]:
            notes.append("publisher stopped at the time cap")
        if row["timed_out"]:
            notes.append("drains did not finish before the cap")
        lines.append(
            f"- S={row['subscribers']}: {status}: {row['events_received']:,}/"
            f"{row['expected_deliveries']:,} events, {row['acks_received']:,}/"
            f"{row['messages']:,} acks, lost {row['lost']}, duplicated {row['duplicated']}, "
            f"order errors {row['order_errors']}, dropped {row['broker_dropped']}; "
            f"N={row['messages']:,}, mean batch {row['mean_batch']:.1f} frames "
            f"(baseline swaps every {row['baseline_drain_every']}), "
            f"CPU {row['broker_cpu_s']:.2f} s / wall {row['broker_wall_s']:.2f} s"
            + (f" ({'; '.join(notes)})" if notes else "")
        )
    return lines


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def environment() -> dict[str, object]:
    return {
        "python": sys.version,
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpu_model": _cpu_model(),
        "nproc": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "trio": trio.__version__,
        "msgspec": msgspec.__version__,
        "trio_pubsub": pubsub.__version__,
        "git_commit": _git_commit(),
    }


def write_json(rows: Sequence[CoreRow], params: dict[str, object], directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = directory / f"core-{stamp}.json"
    document = {
        "scenario": "core",
        "unit": "broker CPU microseconds per delivery (time.process_time)",
        "timestamp": stamp,
        "environment": environment(),
        "params": params,
        "rows": list(rows),
    }
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return path


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a comma-separated list of integers: {text}"
        ) from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError("subscriber counts must be >= 1")
    return sizes


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"not a positive integer: {text}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bench core``: run, print the table, write the JSON. 1 if a count was off."""
    parser = argparse.ArgumentParser(
        prog="python -m bench core",
        description="Core fan-out: broker CPU microseconds per delivery, in process.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="a tiny run: sizes 1,10,100, 200 messages, 1 repeat"
    )
    parser.add_argument("--sizes", type=_sizes, help="subscriber counts (default 1,100,1000)")
    parser.add_argument("--messages", type=_positive, help="N for every size (default: scaled)")
    parser.add_argument(
        "--deliveries",
        type=_positive,
        default=TARGET_DELIVERIES,
        help=f"S*N aimed at when N is scaled (default {TARGET_DELIVERIES:,})",
    )
    parser.add_argument("--repeats", type=_positive, help="runs per size, median kept (default 3)")
    parser.add_argument(
        "--max-seconds", type=float, help=f"wall-clock cap per run (default {MAX_SECONDS:g})"
    )
    parser.add_argument(
        "--inbox", type=_positive, default=TOPIC_INBOX_SIZE, help="the topics' inbox size"
    )
    parser.add_argument(
        "--paced", action="store_true", help="publisher yields after each publish (worst case)"
    )
    parser.add_argument("--full-check", action="store_true", help="decode every frame (slow)")
    parser.add_argument("--no-save", action="store_true", help="do not write the JSON file")
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))

    quick: bool = args.quick
    sizes: list[int] = args.sizes or ([1, 10, 100] if quick else list(SIZES))
    messages: int | None = args.messages or (200 if quick else None)
    deliveries: int = args.deliveries
    repeats: int = args.repeats or (1 if quick else 3)
    max_seconds: float = args.max_seconds or (5.0 if quick else MAX_SECONDS)
    params: dict[str, object] = {
        "sizes": sizes,
        "messages": messages,
        "target_deliveries": None if messages else deliveries,
        "min_messages": MIN_MESSAGES,
        "max_messages": MAX_MESSAGES,
        "repeats": repeats,
        "max_seconds": max_seconds,
        "max_queue_size": MAX_QUEUE_SIZE,
        "topic_inbox_size": args.inbox,
        "topic_max_batch": MAX_BATCH,
        "payload_bytes": PAYLOAD_BYTES,
        "full_check": args.full_check,
        "paced": args.paced,
        "quick": quick,
    }
    scale = f"{messages:,} messages" if messages else f"~{deliveries:,} deliveries"
    mode = "paced publisher" if args.paced else "flooding publisher"
    print(
        f"core fan-out ({mode}): subscribers {sizes}, {scale} per size, {repeats} run(s)",
        flush=True,
    )
    rows = run_core(
        sizes,
        messages,
        target_deliveries=deliveries,
        max_seconds=max_seconds,
        topic_inbox_size=args.inbox,
        full_check=args.full_check,
        warmup=not quick,
        repeats=repeats,
        paced=args.paced,
    )
    env = environment()
    print(
        f"\n{env['cpu_model']}, {env['nproc']} CPUs, Python {platform.python_version()}, "
        f"trio {env['trio']}, msgspec {env['msgspec']}; median of {repeats} run(s)\n"
    )
    print(markdown_table(rows))
    print()
    print("\n".join(check_lines(rows)))
    if not args.no_save:
        path = write_json(rows, params, RESULTS_DIR)
        print(f"\nwrote {path}")
    return 0 if all(row["exact"] for row in rows) else 1
