"""Prometheus metrics: counters and gauges read from a stats snapshot at scrape
time, so the hot path pays nothing for them, plus one histogram of
publish-to-write latency fed by a sampler.

The registry also holds prometheus-client's standard collectors (``process_*``:
CPU, resident memory, open file descriptors; ``python_info``; ``python_gc_*``),
all read at scrape time, and ``trio_pubsub_build_info``.
"""

from __future__ import annotations

import platform
import time
from collections import deque
from collections.abc import Iterator
from typing import Final

from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .._core.counters import Counters, Stats
from .._version import __version__

#: Seconds from the reader receiving a publish to the writer handing its event
#: to a subscriber's socket.
LATENCY_BUCKETS: Final = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
)
#: One write in this many is observed (the first one always).
LATENCY_SAMPLE: Final = 16


#: The recent samples :meth:`LatencySampler.recent` reads (``/stats``, the dashboard).
RECENT_SAMPLES: Final = 4096
RECENT_SECONDS: Final = 10.0


class LatencySampler:
    """Observes one event write in ``every`` across the whole node (the first one
    always), so a quiet node still records latencies and a busy one pays little.
    The latest samples are also kept for :meth:`recent`."""

    __slots__ = ("_countdown", "_every", "_histogram", "_recent")

    def __init__(self, histogram: Histogram, every: int = LATENCY_SAMPLE) -> None:
        self._histogram = histogram
        self._every = every
        self._countdown = 1
        self._recent: deque[tuple[float, float]] = deque(maxlen=RECENT_SAMPLES)

    def written(self, published_at: float) -> None:
        """Events whose oldest was received at ``published_at`` (``perf_counter()``)
        were just written to a subscriber's socket."""
        self._countdown -= 1
        if self._countdown <= 0:
            self._countdown = self._every
            now = time.perf_counter()
            self._histogram.observe(now - published_at)
            self._recent.append((now, now - published_at))

    def recent(self, seconds: float = RECENT_SECONDS) -> tuple[float | None, float | None, int]:
        """The median and 99th percentile latency in milliseconds of the samples of
        the last ``seconds`` (at most :data:`RECENT_SAMPLES`; None without any),
        and how many there were."""
        since = time.perf_counter() - seconds
        latencies = sorted(latency for at, latency in self._recent if at >= since)
        if not latencies:
            return None, None, 0
        count = len(latencies)

        def percentile(fraction: float) -> float:
            return round(latencies[min(count - 1, int(fraction * count))] * 1000, 3)

        return percentile(0.5), percentile(0.99), count


class _StatsCollector(Collector):
    """Reports the snapshot it was last given (the route takes one per scrape)."""

    def __init__(self, counters: Counters) -> None:
        self.counters = counters
        self.stats: Stats | None = None
        self.engine_available = True

    def collect(self) -> Iterator[Metric]:
        stats = self.stats
        if stats is None:
            return
        delivery = stats.delivery
        yield GaugeMetricFamily(
            "pubsub_connections", "Open WebSocket connections", value=stats.websocket.total_clients
        )
        yield GaugeMetricFamily("pubsub_topics", "Topics", value=stats.total_topics)
        yield GaugeMetricFamily(
            "pubsub_engine_available",
            "1 while the engine (Redis) can be reached, else 0",
            value=int(self.engine_available),
        )
        yield GaugeMetricFamily(
            "pubsub_subscribers", "Subscriptions over all topics", value=stats.total_subscribers
        )
        yield CounterMetricFamily(
            "pubsub_connections_opened",
            "WebSocket connections ever opened",
            value=stats.websocket.connection_counter,
        )
        yield CounterMetricFamily(
            "pubsub_messages_published",
            "Messages published through this node",
            value=self.counters.published,
        )
        yield CounterMetricFamily(
            "pubsub_messages_delivered",
            "Event frames handed to connections and not dropped or discarded",
            value=delivery.delivered,
        )
        yield CounterMetricFamily(
            "pubsub_messages_dropped",
            "Event frames dropped from full outboxes (drop_oldest)",
            value=delivery.dropped,
        )
        yield CounterMetricFamily(
            "pubsub_messages_expired",
            "Event frames not written because their message expired while queued",
            value=delivery.expired,
        )
        yield CounterMetricFamily(
            "pubsub_publishes_rate_limited",
            "Publishes refused with RATE_LIMITED (WebSocket and REST)",
            value=delivery.rate_limited,
        )
        yield CounterMetricFamily(
            "pubsub_slow_consumer_disconnects",
            "Connections closed with SLOW_CONSUMER (disconnect policy)",
            value=delivery.slow_consumer_disconnects,
        )


class Metrics:
    """The node's Prometheus registry.

    Args:
        counters: The node's counters.
        node_id: The node's ``NODE_ID`` (a label of ``trio_pubsub_build_info``).
        engine: The engine's kind (``memory`` or ``redis``), a label too.
    """

    def __init__(self, counters: Counters, *, node_id: str, engine: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._collector = _StatsCollector(counters)
        self.registry.register(self._collector)
        self._process = ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        Info(
            "trio_pubsub_build",
            "The broker's version, Python version, engine and node id (value 1)",
            registry=self.registry,
        ).info(
            {
                "version": __version__,
                "python": platform.python_version(),
                "engine": engine,
                "node_id": node_id,
            }
        )
        self.latency = Histogram(
            "pubsub_publish_to_write_seconds",
            "Publish received to event written to the subscriber's socket (sampled)",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.sampler = LatencySampler(self.latency)

    def exposition(self, stats: Stats, *, engine_available: bool = True) -> bytes:
        """The Prometheus text exposition of every metric, counters from ``stats``."""
        self._collector.stats = stats
        self._collector.engine_available = engine_available
        return generate_latest(self.registry)

    def resident_memory_bytes(self) -> float | None:
        """The process's resident memory, as ``process_resident_memory_bytes``
        reports it (None where the process collector cannot read ``/proc``)."""
        for metric in self._process.collect():
            if metric.name == "process_resident_memory_bytes":
                return metric.samples[0].value
        return None
