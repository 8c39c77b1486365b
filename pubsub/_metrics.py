"""Prometheus metrics: read from the broker at scrape time, so the hot path pays
nothing for them, plus one histogram of publish-to-write latency."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ._broker import Broker

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


class _BrokerCollector(Collector):
    def __init__(self, broker: Broker) -> None:
        self._broker = broker

    def collect(self) -> Iterator[Metric]:
        broker = self._broker
        counters = broker.counters
        yield GaugeMetricFamily(
            "pubsub_connections", "Open WebSocket connections", value=len(broker.sessions())
        )
        yield GaugeMetricFamily("pubsub_topics", "Topics", value=len(broker.topics()))
        yield GaugeMetricFamily(
            "pubsub_subscribers", "Subscriptions over all topics", value=broker.total_subscribers()
        )
        yield CounterMetricFamily(
            "pubsub_connections_opened",
            "WebSocket connections ever opened",
            value=counters.connection_counter,
        )
        yield CounterMetricFamily(
            "pubsub_messages_published", "Messages accepted by topics", value=counters.published
        )
        yield CounterMetricFamily(
            "pubsub_messages_delivered",
            "Event frames queued for subscribers and not dropped",
            value=counters.enqueued - counters.dropped,
        )
        yield CounterMetricFamily(
            "pubsub_messages_dropped",
            "Event frames dropped from full outboxes (drop_oldest)",
            value=counters.dropped,
        )
        yield CounterMetricFamily(
            "pubsub_slow_consumer_disconnects",
            "Connections closed with SLOW_CONSUMER (disconnect policy)",
            value=counters.slow_consumer_disconnects,
        )


class Metrics:
    """The broker's Prometheus registry."""

    def __init__(self, broker: Broker) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_BrokerCollector(broker))
        self.latency = Histogram(
            "pubsub_publish_to_write_seconds",
            "Publish received to event written to the subscriber's socket (sampled)",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

    def exposition(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
