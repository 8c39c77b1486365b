"""The end-to-end scenarios: one shape of load, run against each server in turn.

Pub/sub runs (``fanout``, ``topics``, ``publishers``, ``latency``, ``slow``, ``filters``,
``patterns``) share :func:`pubsub_run`: subscriber load processes (up to
``--conns-per-proc`` connections each), one or more publisher processes, and a measured
window from ``go`` to the last subscriber's result. Server CPU is the delta of the
server's CPU time (user + system, :func:`bench.procs.cpu_seconds`) over that window,
divided by the deliveries counted by the subscribers (``us_per_delivery``) or by the
publishes acknowledged (``us_per_publish``). The loss check compares each connection's
count with its share of the acknowledged messages: any loss, duplicate, order error or
closed connection makes the row not ``exact``, and the server's own dropped counter is
reported beside it. A run where any load process used more than 90 % of a core is
flagged ``load_bound``.

``filters`` and ``patterns`` are pub/sub runs too, whose subscriber connections follow
a :class:`~bench.loadgen.Plan` each (content filters; many wildcard patterns on one
connection) and report a ratio to a baseline row of the same run and server
(``vs_baseline``): ``filters`` the filtered runs' CPU per delivery over the unfiltered
run's, ``patterns`` the CPU per publish over the smallest pattern count's.

``connect`` and ``idle`` open connections from a ``connect`` load process; ``idle`` holds
them and reports (server RSS after - before) / connections.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, Literal, TypedDict, cast

from bench.loadgen import (
    ConnectConfig,
    ConnectResult,
    Mode,
    Plan,
    PublisherConfig,
    PublisherResult,
    SubscriberConfig,
    SubscriberResult,
    Subscription,
    plan_target,
    subscription,
)
from bench.peers import PubSub, PubSubCluster, Server
from bench.procs import LOAD_BOUND, BenchError, Pinning, Processes, Progress, Worker, pump

NAMES: Final = (
    "fanout", "topics", "publishers", "latency", "slow", "idle", "connect", "cluster",
    "filters", "patterns",
)  # fmt: skip
#: Outboxes never overflow in throughput runs: they measure delivery, not the drop policy.
DEEP_QUEUE: Final = 100_000_000
#: ``cluster``: the variant of our server's rows on the memory engine the runner started.
MEMORY_VARIANT: Final = "memory engine"
#: ``filters``: the variant every server runs (the peers have no content filters).
UNFILTERED: Final = "unfiltered"
#: ``filters``: the field the filters select on; message N's is ``k<(N - 1) % classes>``.
FILTER_PATH: Final = "payload.kind"
#: ``patterns``: the patterns that match every topic ``t.g<G>.<I>``, one per connection
#: (so each publish reaches exactly this many connections, whatever the pattern count).
MATCHING_PATTERNS: Final = ("t.>", "t.*.*", "*.*.*", "*.>")
#: ``patterns``: topic I is ``t.g<I % PATTERN_GROUPS>.<I>``.
PATTERN_GROUPS: Final = 10
_unique = itertools.count(1)


@dataclass(frozen=True)
class Options:
    fanout_sizes: tuple[int, ...] = (1, 10, 100, 1000, 10000)
    topic_counts: tuple[int, ...] = (10, 100, 1000)
    subscribers_per_topic: int = 2
    publisher_counts: tuple[int, ...] = (1, 4, 16)
    publisher_subscribers: int = 10
    latency_sizes: tuple[int, ...] = (10, 100)
    latency_rates: tuple[int, ...] = (2_000, 20_000)
    latency_seconds: float = 5.0
    slow_subscribers: int = 10
    slow_rate: int = 20_000
    slow_payload_bytes: int = 1024
    idle_counts: tuple[int, ...] = (1000, 10000)
    connect_count: int = 2000
    #: ``cluster``: worker processes on the Redis engine, flooded runs' subscribers, paced
    #: runs' subscribers and their deliveries/s, and the flooded runs' time budget.
    cluster_nodes: int = 2
    cluster_sizes: tuple[int, ...] = (1, 1000)
    cluster_latency_sizes: tuple[int, ...] = (10, 100)
    cluster_rate: int = 2_000
    cluster_flood_seconds: float = 5.0
    #: ``filters`` and ``patterns`` compare rows with a baseline row: each of their runs is
    #: repeated this many times, interleaved, and the least server CPU kept (a shape's
    #: first run on a server, and a run beside a busy neighbour, cost more).
    compare_repeats: int = 2
    #: ``filters``: subscribers of the one topic, distinct filters (the kinds of message),
    #: and messages per run (the same in every variant, on every server).
    filter_subscribers: int = 1000
    filter_classes: int = 10
    filter_messages: int = 5_000
    #: ``filters``: each variant flooded (0) and paced at each rate (messages/s) for
    #: ``filter_paced_seconds``: the same message rate in every variant.
    filter_rates: tuple[int, ...] = (0, 2000)
    filter_paced_seconds: float = 2.0
    #: ``patterns``: topics published round-robin; non-matching pattern subscriptions
    #: swept (beside the fixed MATCHING_PATTERNS); connections holding them; messages/run.
    pattern_topics: int = 1000
    pattern_counts: tuple[int, ...] = (10, 1000, 10000)
    pattern_connections: int = 100
    pattern_messages: int = 10_000
    #: Deliveries per fan-out run (N = this / S, within the bounds below).
    deliveries: int = 2_000_000
    min_messages: int = 200
    max_messages: int = 100_000
    payload_bytes: int = 64
    batch: int = 64
    window: int = 4096
    conns_per_proc: int = 5000
    warmup: int = 2000
    #: Our server's outbox bound in throughput runs (``slow`` uses the server's default).
    max_queue_size: int = DEEP_QUEUE
    max_seconds: float = 30.0
    setup_seconds: float = 120.0
    quiet_seconds: float = 2.0


#: ``--quick``: smaller ``filters`` and ``patterns`` runs (the other scenarios unchanged);
#: an option given explicitly wins.
QUICK: Final[dict[str, object]] = {
    "warmup": 500,
    "filter_messages": 2_000,
    "filter_paced_seconds": 1.0,
    "pattern_counts": (10, 1000),
    "pattern_messages": 5_000,
    "compare_repeats": 1,
}


class Row(TypedDict):
    scenario: str
    server: str
    #: The swept parameter (subscribers, topics, publishers, connections) and its name.
    param: int
    param_name: str
    variant: str
    exact: bool
    check: str
    deliveries: int
    expected: int
    lost: int
    duplicated: int
    order_errors: int
    closed: int
    server_dropped: int | None
    published: int
    acked: int
    publisher_errors: int
    us_per_delivery: float | None
    us_per_publish: float | None
    #: This row's cost over its baseline row's (same run, same server): ``filters`` the
    #: CPU per delivery over the unfiltered row's; ``patterns`` the CPU per publish over
    #: the smallest pattern count's. None on the baseline rows and elsewhere.
    vs_baseline: float | None
    #: The nodes' share of ``us_per_delivery`` (a cluster's workers without its Redis;
    #: all of it for one trio-pubsub process; None for the peers).
    node_us_per_delivery: float | None
    server_cpu_s: float | None
    #: Server CPU while the load processes connected and subscribed (before the window).
    setup_cpu_s: float | None
    #: ``server_cpu_s`` by part of the system under test (``nodes``, ``redis``), if known.
    cpu_parts: dict[str, float]
    server_busy: float | None
    deliveries_per_s: float
    publishes_per_s: float
    #: Messages/s each publisher was paced at; 0 flooded.
    paced: float
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    latency_samples: int
    kb_per_connection: float | None
    connections: int
    connects_per_s: float | None
    window_s: float
    load_busy: dict[str, float]
    load_bound: bool
    notes: str


def empty_row(scenario: str, server: Server, param: int, param_name: str) -> Row:
    return Row(
        scenario=scenario, server=server.name, param=param, param_name=param_name, variant="",
        exact=True, check="", deliveries=0, expected=0, lost=0, duplicated=0, order_errors=0,
        closed=0, server_dropped=None, published=0, acked=0, publisher_errors=0,
        us_per_delivery=None, us_per_publish=None, vs_baseline=None, node_us_per_delivery=None,
        server_cpu_s=None, setup_cpu_s=None, cpu_parts={},
        server_busy=None, deliveries_per_s=0.0, publishes_per_s=0.0, paced=0.0, p50_ms=None,
        p90_ms=None, p99_ms=None, max_ms=None, latency_samples=0, kb_per_connection=None,
        connections=0, connects_per_s=None, window_s=0.0, load_busy={}, load_bound=False, notes="",
    )  # fmt: skip


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of a sorted sequence."""
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[min(len(ordered), rank) - 1]


def split_evenly(total: int, most: int) -> list[int]:
    """``total`` as near-equal parts of at most ``most`` each."""
    parts = max(1, math.ceil(total / most))
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


@dataclass(frozen=True)
class Shape:
    """One pub/sub run: who subscribes to what, who publishes how much, how fast."""

    subscribers: int
    topics: int = 1
    publishers: int = 1
    #: Messages per publisher.
    messages: int = 10_000
    #: Messages per second per publisher; 0 floods.
    rate: float = 0.0
    mode: Mode = "count"
    stalled: int = 0
    payload_bytes: int = 64
    warm: int = 0
    #: Payloads carry a kind, ``k<(seq - 1) % classes>`` (0: none).
    classes: int = 0
    #: The topics, created beforehand; None: ``topics`` fresh ones, created by the run.
    topic_names: tuple[str, ...] | None = None
    #: One per subscriber connection (``subscribers`` of them) instead of connection i
    #: subscribing to topic i % topics.
    plans: tuple[Plan, ...] | None = None


class Bench:
    """Runs scenarios against one server at a time, with the options and processes of a run."""

    def __init__(
        self, options: Options, procs: Processes, pinning: Pinning, progress: Progress
    ) -> None:
        self.options = options
        self.procs = procs
        self.pinning = pinning
        self.progress = progress

    def worker(self, name: str, role: str, config: object) -> Worker:
        return Worker(self.procs, self.pinning, name, role, config)

    def fresh_topics(self, server: Server, scenario: str, count: int) -> list[str]:
        """``count`` topics no earlier run used, created on ``server``."""
        run = next(_unique)
        topics = [f"{scenario}-{run}-{i}" for i in range(count)]
        server.create_topics(topics)
        return topics

    def pubsub_run(self, server: Server, shape: Shape, scenario: str, label: str) -> Row:
        """Subscribers and publishers in load processes; one measured window."""
        opts = self.options
        topics = (
            list(shape.topic_names)
            if shape.topic_names is not None
            else self.fresh_topics(server, scenario, shape.topics)
        )
        if shape.publishers > 1 and (len(topics) > 1 or shape.classes):
            raise BenchError(
                "several publishers share one topic; topics > 1 or classes need one publisher"
            )
        if shape.plans is not None and len(shape.plans) != shape.subscribers:
            raise BenchError(f"{len(shape.plans)} plans for {shape.subscribers} subscribers")
        seconds = shape.messages / shape.rate if shape.rate else opts.max_seconds
        setup_before = settle(server)
        subs: list[Worker] = []
        stalled: list[Worker] = []
        pubs: list[Worker] = []
        try:
            first = 0
            for index, count in enumerate(split_evenly(shape.subscribers, opts.conns_per_proc)):
                config = SubscriberConfig(
                    proto=server.proto, port=server.port, topics=topics, first=first,
                    connections=count, mode=shape.mode, check_order=shape.publishers == 1,
                    warm=shape.warm, max_seconds=seconds + opts.max_seconds + 60.0,
                    setup_seconds=opts.setup_seconds, quiet_seconds=opts.quiet_seconds,
                    classes=shape.classes,
                )  # fmt: skip
                if shape.plans is not None:
                    config["plans"] = list(shape.plans[first : first + count])
                subs.append(self.worker(f"subscribers-{index}", "subscribe", config))
                first += count
            if shape.stalled:
                config = SubscriberConfig(
                    proto=server.proto, port=server.port, topics=topics, first=0,
                    connections=shape.stalled, mode="stall", check_order=False, warm=0,
                    max_seconds=seconds + opts.max_seconds + 120.0,
                    setup_seconds=opts.setup_seconds, quiet_seconds=opts.quiet_seconds,
                )  # fmt: skip
                stalled.append(self.worker("stalled", "subscribe", config))
            for index in range(shape.publishers):
                config_pub = PublisherConfig(
                    proto=server.proto, port=server.port, topics=topics, messages=shape.messages,
                    rate=shape.rate, batch=opts.batch, window=opts.window,
                    payload_bytes=shape.payload_bytes, setup_seconds=opts.setup_seconds,
                    max_seconds=max(seconds * 1.5, opts.max_seconds), grace_seconds=10.0,
                    classes=shape.classes,
                )  # fmt: skip
                pubs.append(self.worker(f"publisher-{index}", "publish", config_pub))
            everyone = [*subs, *stalled, *pubs]
            self.progress.show(f"{label}: connecting")
            pump(
                everyone,
                lambda: all(worker.ready for worker in everyone),
                opts.setup_seconds + 30.0,
                f"{label}: load processes to connect",
                lambda: self.progress.show(f"{label}: connecting"),
            )
            server.check_alive()
            dropped_before = server.dropped()
            parts_before = server.cpu_parts()
            cpu_before = server.cpu() if parts_before is None else sum(parts_before.values())
            start = time.monotonic()
            for worker in everyone:
                worker.send("go")
            published = shape.messages * shape.publishers
            expected_total = (
                shape.subscribers * published // len(topics)
                if shape.plans is None
                else sum(
                    plan_target(plan, published, len(topics), shape.classes) for plan in shape.plans
                )
            )

            def tick() -> None:
                delivered = sum(int(worker.progress.get("events", 0)) for worker in subs)
                acked = sum(
                    int((worker.result or worker.progress).get("acked", 0)) for worker in pubs
                )
                self.progress.show(
                    f"{label}: {time.monotonic() - start:5.1f} s, acked {acked:,}, "
                    f"delivered {delivered:,}/{expected_total:,}"
                )

            pump(
                everyone,
                lambda: all(worker.result is not None for worker in pubs),
                seconds * 1.5 + opts.max_seconds + 40.0,
                f"{label}: the publishers",
                tick,
            )
            pub_results = [cast(PublisherResult, worker.result) for worker in pubs]
            acked = sum(result["acked"] for result in pub_results)
            for worker in subs:
                worker.send(f"target {acked}")
            pump(
                subs,
                lambda: all(worker.result is not None for worker in subs),
                opts.max_seconds + opts.quiet_seconds + 70.0,
                f"{label}: the subscribers",
                tick,
            )
            parts_after = server.cpu_parts()
            cpu_after = server.cpu() if parts_after is None else sum(parts_after.values())
            window = time.monotonic() - start
            for worker in stalled:
                worker.send("stop")
            pump(stalled, lambda: all(w.result is not None for w in stalled), 30.0, "stalled")
            dropped_after = server.dropped()
        finally:
            for worker in [*subs, *stalled, *pubs]:
                worker.stop()
        sub_results = [cast(SubscriberResult, worker.result) for worker in subs]
        row = empty_row(scenario, server, shape.subscribers, "subscribers")
        if setup_before is not None and cpu_before is not None:
            row["setup_cpu_s"] = cpu_before - setup_before
        deliveries = sum(result["events"] for result in sub_results)
        row.update(
            {
                "deliveries": deliveries,
                "expected": sum(result["expected"] for result in sub_results),
                "lost": sum(result["lost"] for result in sub_results),
                "duplicated": sum(result["duplicated"] for result in sub_results),
                "order_errors": sum(r["order_errors"] + r["final_errors"] for r in sub_results),
                "closed": sum(result["closed"] for result in sub_results),
                "published": sum(result["published"] for result in pub_results),
                "acked": acked,
                "publisher_errors": sum(result["errors"] for result in pub_results),
                "window_s": window,
                "connections": shape.subscribers,
                "paced": shape.rate,
            }
        )
        if dropped_before is not None and dropped_after is not None:
            row["server_dropped"] = dropped_after - dropped_before
        if cpu_before is not None and cpu_after is not None:
            cpu = cpu_after - cpu_before
            row["server_cpu_s"] = cpu
            row["server_busy"] = cpu / window
            row["us_per_delivery"] = cpu * 1e6 / deliveries if deliveries else None
            row["us_per_publish"] = cpu * 1e6 / acked if acked else None
        if parts_before is not None and parts_after is not None:
            row["cpu_parts"] = {
                part: round(parts_after[part] - parts_before[part], 4) for part in parts_after
            }
            if deliveries and "nodes" in row["cpu_parts"]:
                row["node_us_per_delivery"] = row["cpu_parts"]["nodes"] * 1e6 / deliveries
        first_ns = min(result["first_ns"] for result in pub_results)
        last_event = max(result["last_ns"] for result in sub_results)
        last_ack = max(result["last_ns"] for result in pub_results)
        if last_event > first_ns:
            row["deliveries_per_s"] = deliveries / ((last_event - first_ns) / 1e9)
        if last_ack > first_ns:
            row["publishes_per_s"] = acked / ((last_ack - first_ns) / 1e9)
        latencies = sorted(v for result in sub_results for v in result["latencies_us"])
        if latencies:
            row.update(
                {
                    "p50_ms": percentile(latencies, 0.5) / 1000,
                    "p90_ms": percentile(latencies, 0.9) / 1000,
                    "p99_ms": percentile(latencies, 0.99) / 1000,
                    "max_ms": latencies[-1] / 1000,
                    "latency_samples": len(latencies),
                }
            )
        row["load_busy"] = load_busy([*subs, *pubs], window)
        notes = [f"{r['error_sample'][:100]!r}" for r in pub_results if r["error_sample"]]
        if any(result["capped"] for result in pub_results):
            notes.append("publisher stopped at the time cap")
        if any(r["timed_out"] for r in [*sub_results, *pub_results]):
            notes.append("TIMED OUT")
        row["load_bound"] = any(busy >= LOAD_BOUND for busy in row["load_busy"].values())
        if row["load_bound"]:
            busiest = max(row["load_busy"].items(), key=lambda item: item[1])
            notes.append(f"LOAD-BOUND ({busiest[0]} {busiest[1]:.0%})")
        row["notes"] = "; ".join(notes)
        drops_expected = shape.stalled > 0
        row["exact"] = (
            deliveries == row["expected"]
            and row["lost"] == row["duplicated"] == row["order_errors"] == row["closed"] == 0
            and row["publisher_errors"] == 0
            and acked == row["published"] == shape.messages * shape.publishers
            and (drops_expected or not row["server_dropped"])
            and "TIMED OUT" not in row["notes"]
        )
        row["check"] = describe_check(row)
        return row

    def warm_up(self, server: Server, shape: Shape | None = None) -> None:
        """A short untimed run on a fresh server, so no measured run is its first; with
        ``shape``, that shape with ``warmup`` messages too (a first run of 1,000
        subscribers costs the server far more per delivery than the next one)."""
        count = self.options.warmup
        if count:
            self.pubsub_run(server, Shape(10, messages=count), "warmup", "warm-up")
            if shape is not None:
                shape = dataclasses.replace(shape, messages=count)
                self.pubsub_run(server, shape, "warmup", "warm-up, the run's shape")

    def finished(self, row: Row, label: str) -> Row:
        parts = [label, row["check"]]
        if row["us_per_delivery"] is not None:
            parts.append(f"{row['us_per_delivery']:.3f} us/delivery")
        if row["node_us_per_delivery"] is not None and len(row["cpu_parts"]) > 1:
            parts.append(f"{row['node_us_per_delivery']:.3f} us/delivery on the nodes")
        if row["scenario"] == "patterns" and row["us_per_publish"] is not None:
            parts.append(f"{row['us_per_publish']:.3f} us/publish")
        if row["vs_baseline"] is not None:
            parts.append(f"{row['vs_baseline']:.2f}x the baseline's cost")
        if row["paced"] == 0 and row["publishes_per_s"]:
            parts.append(f"{row['publishes_per_s']:,.0f} publishes/s")
        if row["deliveries"]:
            parts.append(f"{row['deliveries_per_s']:,.0f} deliveries/s")
        if row["p99_ms"] is not None:
            parts.append(f"p99 {row['p99_ms']:.3f} ms")
        if row["kb_per_connection"] is not None:
            parts.append(f"{row['kb_per_connection']:.1f} KB/connection")
        if row["connects_per_s"] is not None:
            parts.append(f"{row['connects_per_s']:,.0f} connections/s")
        if row["notes"]:
            parts.append(row["notes"])
        self.progress.done(
            ": ".join(parts[:2]) + (", " + ", ".join(parts[2:]) if parts[2:] else "")
        )
        return row

    def messages_for(self, deliveries_per_message: int) -> int:
        opts = self.options
        wanted = opts.deliveries // max(1, deliveries_per_message)
        return max(opts.min_messages, min(opts.max_messages, wanted))

    # -------------------------------------------------------------- scenarios

    def fanout(self, server: Server) -> list[Row]:
        self.warm_up(server)
        rows = []
        for size in self.options.fanout_sizes:
            shape = Shape(
                size, messages=self.messages_for(size), payload_bytes=self.options.payload_bytes
            )
            label = f"fanout {server.name} S={size}"
            rows.append(self.finished(self.pubsub_run(server, shape, "fanout", label), label))
        return rows

    def topics(self, server: Server) -> list[Row]:
        self.warm_up(server)
        per_topic = self.options.subscribers_per_topic
        rows = []
        for count in self.options.topic_counts:
            shape = Shape(
                count * per_topic, topics=count, messages=self.messages_for(per_topic),
                payload_bytes=self.options.payload_bytes,
            )  # fmt: skip
            label = f"topics {server.name} T={count} x {per_topic}"
            row = self.pubsub_run(server, shape, "topics", label)
            row.update({"param": count, "param_name": "topics"})
            rows.append(self.finished(row, label))
        return rows

    def publishers(self, server: Server) -> list[Row]:
        self.warm_up(server)
        subscribers = self.options.publisher_subscribers
        total = self.messages_for(subscribers)
        rows = []
        for count in self.options.publisher_counts:
            shape = Shape(
                subscribers, publishers=count, messages=max(1, total // count),
                payload_bytes=self.options.payload_bytes,
            )  # fmt: skip
            label = f"publishers {server.name} P={count}"
            row = self.pubsub_run(server, shape, "publishers", label)
            row.update({"param": count, "param_name": "publishers"})
            rows.append(self.finished(row, label))
        return rows

    def latency(self, server: Server) -> list[Row]:
        self.warm_up(server)
        opts = self.options
        rows = []
        for rate in opts.latency_rates:
            for size in opts.latency_sizes:
                per_s = rate / size
                shape = Shape(
                    size, messages=max(1, round(per_s * opts.latency_seconds)), rate=per_s,
                    mode="every", payload_bytes=opts.payload_bytes, warm=round(per_s * 0.5),
                )  # fmt: skip
                label = f"latency {server.name} {rate:,}/s S={size}"
                row = self.pubsub_run(server, shape, "latency", label)
                row["variant"] = f"{rate:,} deliveries/s"
                rows.append(self.finished(row, label))
        return rows

    def slow(self, server: Server) -> list[Row]:
        """The same paced run without and with one subscriber that never reads."""
        self.warm_up(server)
        opts = self.options
        per_s = opts.slow_rate / opts.slow_subscribers
        rows = []
        for stalled in (0, 1):
            shape = Shape(
                opts.slow_subscribers, messages=max(1, round(per_s * opts.latency_seconds)),
                rate=per_s, mode="every", stalled=stalled, payload_bytes=opts.slow_payload_bytes,
                warm=round(per_s * 0.5),
            )  # fmt: skip
            variant = "with a stalled subscriber" if stalled else "no stalled subscriber"
            label = f"slow {server.name} {variant}"
            row = self.pubsub_run(server, shape, "slow", label)
            row["variant"] = variant
            rows.append(self.finished(row, label))
        return rows

    def cluster(self, server: Server) -> list[Row]:
        """The same shapes on our server's memory engine (the server the runner started)
        and on ``cluster_nodes`` workers over the Redis engine (started here, with a Redis
        of their own on the server core); both variants' rows carry our server's name, so
        they share our column. A peer runs each shape once; its rows are copied to both
        variants, so each of our lines has the peer's value beside it."""
        opts = self.options
        overlap = sorted(set(opts.cluster_sizes) & set(opts.cluster_latency_sizes))
        if overlap:
            raise BenchError(
                f"cluster: {overlap} both flooded and paced subscribers; rows are told apart "
                "by subscribers, so --cluster-sizes and --cluster-latency-sizes must differ"
            )
        clustered = f"redis engine, {opts.cluster_nodes} nodes"
        if not isinstance(server, PubSub):
            copies = []
            for row in self.cluster_shapes(server, server.name):
                for variant in (MEMORY_VARIANT, clustered):
                    copy = row.copy()
                    copy["variant"] = variant
                    copies.append(copy)
            return copies
        if server.target is not None:
            rows = self.cluster_shapes(server, server.name)
            for row in rows:
                row["variant"] = "--target"
            self.progress.done(f"cluster: no {clustered} run beside --target {server.name}")
            return rows
        memory = self.cluster_shapes(server, f"{server.name} memory")
        for row in memory:
            row["variant"] = MEMORY_VARIANT
        nodes = PubSubCluster(
            self.procs, self.pinning, nodes=opts.cluster_nodes,
            max_queue_size=server.max_queue_size,
        )  # fmt: skip
        try:
            self.progress.show(f"cluster {nodes.name}: starting")
            nodes.start()
            redis = self.cluster_shapes(nodes, nodes.name)
        finally:
            nodes.stop()
        for row in redis:
            row["variant"] = clustered
            row["server"] = server.name
        return [row for pair in zip(memory, redis, strict=True) for row in pair]

    def cluster_shapes(self, server: Server, name: str) -> list[Row]:
        """A warm-up, then flooded runs (``cluster_sizes``; messages capped to what the
        warm-up's publish rate fits in ``cluster_flood_seconds``), then paced runs at
        ``cluster_rate`` deliveries/s (``cluster_latency_sizes``)."""
        opts = self.options
        cap = opts.max_messages
        if opts.warmup:
            warm = self.pubsub_run(server, Shape(10, messages=opts.warmup), "warmup", "warm-up")
            if warm["publishes_per_s"]:
                budget = round(warm["publishes_per_s"] * opts.cluster_flood_seconds)
                cap = max(opts.min_messages, budget)
        rows = []
        for size in opts.cluster_sizes:
            shape = Shape(
                size, messages=min(cap, self.messages_for(size)),
                payload_bytes=opts.payload_bytes,
            )  # fmt: skip
            label = f"cluster {name} S={size}"
            rows.append(self.finished(self.pubsub_run(server, shape, "cluster", label), label))
        for size in opts.cluster_latency_sizes:
            per_s = opts.cluster_rate / size
            shape = Shape(
                size, messages=max(1, round(per_s * opts.latency_seconds)), rate=per_s,
                mode="every", payload_bytes=opts.payload_bytes, warm=round(per_s * 0.5),
            )  # fmt: skip
            label = f"cluster {name} {opts.cluster_rate:,}/s S={size}"
            rows.append(self.finished(self.pubsub_run(server, shape, "cluster", label), label))
        return rows

    def filters(self, server: Server) -> list[Row]:
        """One topic, ``filter_subscribers`` subscribers, one publisher whose messages'
        kinds cycle through ``filter_classes``: unfiltered, then subscriber i filtering on
        ``payload.kind`` with kind i % classes, ``eq`` (each message reaches 1 filter in C)
        and ``ne`` (C - 1 in C); the same messages, of the same size, in each variant. For
        each of ``filter_rates``: 0 floods ``filter_messages`` messages (run
        ``compare_repeats`` times, interleaved, the least server CPU per delivery kept: a
        flood's cost swings with how deep the queues get); a rate paces
        ``filter_paced_seconds`` of messages at that rate, once (steady). The peers have no
        content filters: they run the unfiltered variant only, once, as context."""
        opts = self.options
        classes, size = opts.filter_classes, opts.filter_subscribers

        def shape(op: str | None, rate: int) -> Shape:
            topic = self.fresh_topics(server, "filters", 1)[0]
            messages = round(rate * opts.filter_paced_seconds) if rate else opts.filter_messages
            return Shape(
                size, messages=max(1, messages), rate=rate, payload_bytes=opts.payload_bytes,
                classes=classes, topic_names=(topic,),
                plans=tuple(filter_plan(topic, i % classes, classes, op) for i in range(size)),
            )  # fmt: skip

        self.warm_up(server, shape(None, 0))
        ours = isinstance(server, PubSub)
        ops: tuple[str | None, ...] = (None, "eq", "ne") if ours else (None,)
        kept: list[Row] = []
        for rate in opts.filter_rates:
            runs: dict[str | None, list[Row]] = {op: [] for op in ops}
            repeats = opts.compare_repeats if ours and not rate else 1
            for attempt in range(1, repeats + 1):
                for op in ops:
                    variant = f"{pace(rate)}, {filter_variant(op, classes)}"
                    label = f"filters {server.name} S={size} {variant}"
                    label += f" (run {attempt}/{repeats})" if repeats > 1 else ""
                    row = self.pubsub_run(server, shape(op, rate), "filters", label)
                    row["variant"] = variant
                    runs[op].append(self.finished(row, label))
            rows = [best_of(runs[op], "us_per_delivery") for op in ops]
            base = rows[0]["us_per_delivery"]
            for row in rows[1:]:
                if base and row["us_per_delivery"] is not None:
                    row["vs_baseline"] = row["us_per_delivery"] / base
            kept += rows
        return self.kept(kept, f"filters {server.name}", "us_per_delivery")

    def kept(self, rows: list[Row], label: str, key: CostKey) -> list[Row]:
        """Say which runs were kept (when repeated), with their ratio to the baseline."""
        if any("least of" in row["notes"] or row["vs_baseline"] for row in rows):
            for row in rows:
                cost = row[key]
                text = f"{label} {row['param_name']}={row['param']:,}"
                text += f" {row['variant']}" if row["variant"] else ""
                text += f": kept {cost:.3f} {COST_UNITS[key]}" if cost is not None else ": -"
                if row["vs_baseline"] is not None:
                    text += f", {row['vs_baseline']:.2f}x the baseline's"
                self.progress.done(text)
        return rows

    def patterns(self, server: Server) -> list[Row]:
        """``pattern_topics`` topics ``t.g<I % 10>.<I>``, one publisher flooding
        ``pattern_messages`` messages round-robin over them; ``pattern_connections``
        subscriber connections hold the MATCHING_PATTERNS (one each: every publish reaches
        exactly that many connections) plus P patterns that match no topic, for each P
        in ``pattern_counts``, spread round-robin. NATS takes the same patterns; Redis
        takes them as PSUBSCRIBE globs (a final ``>`` becomes ``*``). Each P runs
        ``compare_repeats`` times, interleaved; the least server CPU per publish is kept."""
        opts = self.options
        if opts.pattern_connections < len(MATCHING_PATTERNS):
            raise BenchError(f"patterns: --pattern-connections below {len(MATCHING_PATTERNS)}")
        names = tuple(f"t.g{i % PATTERN_GROUPS}.{i}" for i in range(opts.pattern_topics))
        server.create_topics(list(names), exist_ok=True)

        def shape(count: int) -> Shape:
            plans = pattern_plans(
                count, opts.pattern_connections, len(names), glob=server.proto == "redis"
            )
            return Shape(
                opts.pattern_connections, messages=opts.pattern_messages,
                payload_bytes=opts.payload_bytes, topic_names=names, plans=plans,
            )  # fmt: skip

        self.warm_up(server, shape(min(opts.pattern_counts)))
        counts = sorted(set(opts.pattern_counts))
        runs: dict[int, list[Row]] = {count: [] for count in counts}
        repeats = opts.compare_repeats
        for attempt in range(1, repeats + 1):
            for count in counts:
                label = f"patterns {server.name} P={count:,}"
                label += f" (run {attempt}/{repeats})" if repeats > 1 else ""
                row = self.pubsub_run(server, shape(count), "patterns", label)
                row.update({"param": count, "param_name": "non-matching patterns"})
                runs[count].append(self.finished(row, label))
        rows = [best_of(runs[count], "us_per_publish") for count in counts]
        base = rows[0]["us_per_publish"]
        for row in rows[1:]:
            if base and row["us_per_publish"] is not None:
                row["vs_baseline"] = row["us_per_publish"] / base
        return self.kept(rows, f"patterns {server.name}", "us_per_publish")

    def connect(self, server: Server) -> list[Row]:
        count = self.options.connect_count
        row = self.open_connections(server, "connect", count, hold=False)
        return [self.finished(row, f"connect {server.name} {count:,}")]

    def idle(self, server: Server) -> list[Row]:
        return [
            self.finished(
                self.open_connections(server, "idle", count, hold=True),
                f"idle {server.name} {count:,}",
            )
            for count in self.options.idle_counts
        ]

    def open_connections(self, server: Server, scenario: str, count: int, hold: bool) -> Row:
        opts = self.options
        label = f"{scenario} {server.name} {count:,} connections"
        row = empty_row(scenario, server, count, "connections")
        cpu_before = server.cpu()
        rss_before = server.rss_kb()
        workers = [
            self.worker(
                f"connect-{index}",
                "connect",
                ConnectConfig(
                    proto=server.proto,
                    port=server.port,
                    connections=part,
                    hold=hold,
                    max_seconds=opts.setup_seconds + 60.0,
                    setup_seconds=opts.setup_seconds,
                ),
            )
            for index, part in enumerate(split_evenly(count, opts.conns_per_proc))
        ]
        start = time.monotonic()
        try:
            self.progress.show(f"{label}: connecting")
            done: Callable[[], bool] = (
                (lambda: all(w.ready for w in workers))
                if hold
                else (lambda: all(w.result is not None for w in workers))
            )
            pump(workers, done, opts.setup_seconds + 30.0, label)
            window = time.monotonic() - start
            if hold:
                time.sleep(1.0)  # let the server settle before reading its RSS
                rss_after = server.rss_kb()
                if isinstance(server, PubSub):
                    row["notes"] = f"server counts {server.clients():,} clients"
                for worker in workers:
                    worker.send("stop")
                pump(workers, lambda: all(w.result is not None for w in workers), 30.0, label)
                if rss_before is not None and rss_after is not None:
                    row["kb_per_connection"] = (rss_after - rss_before) / count
            cpu_after = server.cpu()
        finally:
            for worker in workers:
                worker.stop()
        results = [cast(ConnectResult, worker.result) for worker in workers]
        opened = sum(result["connections"] for result in results)
        setup = max(result["setup_s"] for result in results)
        row.update(
            {
                "connections": opened,
                "connects_per_s": opened / setup if setup > 0 else 0.0,
                "window_s": window,
                "exact": opened == count,
                "check": f"ok {opened:,}/{count:,}"
                if opened == count
                else f"OPENED {opened:,}/{count:,}",
            }
        )
        if cpu_before is not None and cpu_after is not None:
            row["server_cpu_s"] = cpu_after - cpu_before
        row["load_busy"] = load_busy(workers, window)
        row["load_bound"] = any(busy >= LOAD_BOUND for busy in row["load_busy"].values())
        if row["load_bound"] and not hold:
            row["notes"] = "LOAD-BOUND"
        return row


CostKey = Literal["us_per_delivery", "us_per_publish"]
COST_UNITS: Final[dict[CostKey, str]] = {
    "us_per_delivery": "us/delivery",
    "us_per_publish": "us/publish",
}


def best_of(runs: Sequence[Row], key: CostKey) -> Row:
    """Of repeated runs of one shape, the one with the least server CPU (``key``) among
    those whose loss check passed (among all, if none did); its notes list every run's
    cost and any other run's failed check, so the spread stays visible."""
    if len(runs) == 1:
        return runs[0]
    pool = [row for row in runs if row["exact"]] or list(runs)
    best = min(pool, key=lambda row: math.inf if row[key] is None else cast(float, row[key]))
    costs = ", ".join("-" if row[key] is None else f"{row[key]:.3f}" for row in runs)
    notes = [best["notes"]] if best["notes"] else []
    notes.append(f"least of {len(runs)} runs' {COST_UNITS[key]} ({costs})")
    notes += [
        f"another run's check: {row['check']}"
        for row in runs
        if row is not best and not row["exact"]
    ]
    return {**best, "notes": "; ".join(notes)}


def pace(rate: float) -> str:
    """How a run's publisher went: ``flooded`` or ``N msg/s``."""
    return f"{rate:,.0f} msg/s" if rate else "flooded"


def filter_variant(op: str | None, classes: int) -> str:
    """The name of a ``filters`` variant (a row's ``variant``)."""
    if op is None:
        return UNFILTERED
    reach = 1 if op == "eq" else classes - 1
    return f"{op}: each message matches {reach} filter{'s' if reach > 1 else ''} in {classes}"


def filter_plan(topic: str, kind: int, classes: int, op: str | None) -> Plan:
    """A subscriber of ``topic`` filtering ``payload.kind`` ``op`` ``k<kind>`` (None: no
    filter), and the kinds of message that reach it."""
    if op is None:
        return Plan(subscriptions=[subscription(topic)], topics=[0], kinds=None)
    condition = {"path": FILTER_PATH, "op": op, "value": f"k{kind}"}
    kinds = [kind] if op == "eq" else [k for k in range(classes) if k != kind]
    sub = Subscription(topic=topic, pattern=False, filter=condition)
    return Plan(subscriptions=[sub], topics=[0], kinds=kinds)


def decoy_pattern(j: int) -> str:
    """Non-matching pattern number ``j``: each shape fails at another point of a topic
    ``t.g<G>.<I>`` (third segment, second, first, and length: four segments)."""
    return (f"t.*.x{j}", f"t.h{j}.*", f"u{j}.>", f"*.*.*.x{j}")[j % 4]


def as_glob(pattern: str) -> str:
    """A pattern as a Redis PSUBSCRIBE glob: the final ``>`` becomes ``*``. (A glob ``*``
    also spans dots; for these topics and patterns that changes no match.)"""
    return pattern[:-1] + "*" if pattern.endswith(">") else pattern


def pattern_plans(decoys: int, connections: int, topics: int, glob: bool) -> tuple[Plan, ...]:
    """Connection i < len(MATCHING_PATTERNS) holds ``MATCHING_PATTERNS[i]`` and receives
    every topic's messages; non-matching pattern j goes to connection j % connections."""
    held: list[list[str]] = [[] for _ in range(connections)]
    for index, pattern in enumerate(MATCHING_PATTERNS):
        held[index].append(pattern)
    for j in range(decoys):
        held[j % connections].append(decoy_pattern(j))
    everything = list(range(topics))
    return tuple(
        Plan(
            subscriptions=[
                Subscription(topic=as_glob(p) if glob else p, pattern=True, filter=None)
                for p in patterns
            ],
            topics=everything if index < len(MATCHING_PATTERNS) else [],
            kinds=None,
        )
        for index, patterns in enumerate(held)
    )


#: ``settle``: the server is quiet once it used less than this share of a core over
#: one poll interval (seconds), waiting at most SETTLE_SECONDS.
SETTLE_SHARE: Final = 0.05
SETTLE_POLL: Final = 0.05
SETTLE_SECONDS: Final = 2.0


def settle(server: Server) -> float | None:
    """Wait until the server is quiet (what an earlier run left, such as connections
    closing, is then not counted in this one's set-up); its CPU seconds then, if known."""
    before = server.cpu()
    deadline = time.monotonic() + SETTLE_SECONDS
    while before is not None and time.monotonic() < deadline:
        time.sleep(SETTLE_POLL)
        now = server.cpu()
        if now is None or now - before < SETTLE_SHARE * SETTLE_POLL:
            return now
        before = now
    return before


def load_busy(workers: Sequence[Worker], window: float) -> dict[str, float]:
    """Each load process's CPU share of one core over its own measured time, and all of
    them together over the run's window (they share the load core)."""
    shares = {worker.name: round(worker.busy, 3) for worker in workers}
    total = sum(float(worker.result["cpu_s"]) for worker in workers if worker.result)
    shares["all load processes"] = round(total / window, 3) if window > 0 else 0.0
    return shares


def describe_check(row: Row) -> str:
    """``ok N/N`` or every way the counts went wrong; never hidden."""
    text = f"{row['deliveries']:,}/{row['expected']:,}"
    problems = [
        f"{name} {row[key]:,}"  # type: ignore[literal-required]
        for name, key in (
            ("LOST", "lost"),
            ("DUPLICATED", "duplicated"),
            ("ORDER ERRORS", "order_errors"),
            ("CLOSED", "closed"),
            ("PUBLISH ERRORS", "publisher_errors"),
        )
        if row[key]  # type: ignore[literal-required]
    ]
    if row["acked"] != row["published"]:
        problems.append(f"ACKED {row['acked']:,}/{row['published']:,}")
    if row["server_dropped"]:
        problems.append(f"server dropped {row['server_dropped']:,}")
    if row["exact"] and not problems:
        return f"ok {text}"
    return (
        ("ok " if row["exact"] else "MISMATCH ")
        + text
        + (": " + ", ".join(problems) if problems else "")
    )


RUNNERS: Final[dict[str, Callable[[Bench, Server], list[Row]]]] = {
    "fanout": Bench.fanout,
    "topics": Bench.topics,
    "publishers": Bench.publishers,
    "latency": Bench.latency,
    "slow": Bench.slow,
    "idle": Bench.idle,
    "connect": Bench.connect,
    "cluster": Bench.cluster,
    "filters": Bench.filters,
    "patterns": Bench.patterns,
}
