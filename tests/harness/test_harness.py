"""Smoke test of the end-to-end load harness at a tiny size, against our server only
(and, for ``cluster``, a redis-server: the cluster's own, and Redis as the peer).

Seconds, not a benchmark: no timing assertions. It checks that every scenario runs,
that the harness counts messages exactly, that it reports loss when the server drops
(a one-frame outbox under ``drop_oldest``), and that no process it started outlives it.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import _need_redis

from bench import report
from bench.__main__ import main as bench_main
from bench.peers import PubSub, PubSubCluster, Redis
from bench.procs import Processes, Progress, Worker, make_pinning, managed, start_time
from bench.scenarios import DEEP_QUEUE, MEMORY_VARIANT, RUNNERS, Bench, Options, Row, Shape

TINY = Options(
    fanout_sizes=(1, 3),
    topic_counts=(3,),
    subscribers_per_topic=2,
    publisher_counts=(1, 2),
    publisher_subscribers=2,
    latency_sizes=(2,),
    latency_rates=(200,),
    latency_seconds=1.0,
    slow_subscribers=2,
    slow_rate=400,
    idle_counts=(20,),
    connect_count=20,
    deliveries=300,
    min_messages=60,
    max_messages=300,
    conns_per_proc=2,
    warmup=0,
    max_seconds=20.0,
    setup_seconds=30.0,
    quiet_seconds=1.0,
)


def children() -> list[int]:
    """PIDs of this process's live (not zombie) children, from /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == os.getpid() and fields[0] != "Z":
            found.append(int(entry))
    return found


@pytest.fixture
def procs() -> Iterator[Processes]:
    before = children()
    with managed() as started:
        yield started
    assert children() == before


def run(procs: Processes, scenario: str, max_queue_size: int = DEEP_QUEUE) -> list[Row]:
    pinning = make_pinning()
    server = PubSub(procs, pinning, max_queue_size=max_queue_size)
    server.start()
    try:
        return RUNNERS[scenario](Bench(TINY, procs, pinning, Progress()), server)
    finally:
        server.stop()


@pytest.mark.parametrize("scenario", ["fanout", "topics", "publishers", "latency", "slow"])
def test_pubsub_counts_are_exact(procs: Processes, scenario: str) -> None:
    rows = run(procs, scenario)
    assert rows
    for row in rows:
        assert row["exact"], row
        assert row["deliveries"] == row["expected"] > 0
        assert row["lost"] == row["duplicated"] == row["order_errors"] == row["closed"] == 0
        assert row["acked"] == row["published"]
        assert row["check"].startswith("ok ")
        assert row["us_per_delivery"] is not None
        assert row["p99_ms"] is not None
    if scenario == "fanout":
        messages = [row["published"] for row in rows]
        assert messages == [300, 100]
        assert [row["deliveries"] for row in rows] == [300, 300]
    if scenario == "topics":
        (row,) = rows
        assert row["param"] == 3 and row["deliveries"] == 2 * row["published"]
    if scenario == "latency":
        (row,) = rows
        assert row["published"] == 100 and row["deliveries"] == 200
        assert row["latency_samples"] == 2 * 50  # the first half second is warm-up
    if scenario == "slow":
        assert [row["variant"] for row in rows] == [
            "no stalled subscriber",
            "with a stalled subscriber",
        ]


@pytest.mark.parametrize("scenario", ["idle", "connect"])
def test_connections_are_counted(procs: Processes, scenario: str) -> None:
    (row,) = run(procs, scenario)
    assert row["exact"] and row["connections"] == 20
    assert row["connects_per_s"]
    if scenario == "idle":
        assert row["kb_per_connection"] is not None
        assert row["notes"] == "server counts 20 clients"


def test_loss_is_reported(procs: Processes, monkeypatch: pytest.MonkeyPatch) -> None:
    """A one-frame outbox under drop_oldest, and a subscriber process paused (SIGSTOP) for
    two seconds while the publisher floods: the server drops, and the harness must say so."""
    send = Worker.send

    def send_and_pause(worker: Worker, command: str) -> None:
        send(worker, command)
        if command == "go" and worker.name.startswith("subscribers"):
            os.kill(worker.popen.pid, signal.SIGSTOP)
            threading.Timer(2.0, os.kill, (worker.popen.pid, signal.SIGCONT)).start()

    monkeypatch.setattr(Worker, "send", send_and_pause)
    pinning = make_pinning()
    server = PubSub(procs, pinning, max_queue_size=1)
    server.start()
    try:
        bench = Bench(TINY, procs, pinning, Progress())
        shape = Shape(2, messages=6000, payload_bytes=4000)
        row = bench.pubsub_run(server, shape, "fanout", "drop test")
    finally:
        server.stop()
    assert row["server_dropped"]
    assert not row["exact"]
    assert row["lost"] > 0
    assert row["lost"] == row["server_dropped"]  # each drop the server counts, we count
    assert row["check"].startswith("MISMATCH") and "LOST" in row["check"]


def test_cli_writes_tables_and_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    before = children()
    monkeypatch.setattr(report, "RESULTS_DIR", tmp_path)
    status = bench_main(
        ["fanout", "connect", "--no-peers", "--fanout-sizes", "2", "--deliveries", "100",
         "--min-messages", "50", "--warmup", "0", "--connect-count", "10"]
    )  # fmt: skip
    assert status == 0
    out = capsys.readouterr().out
    assert "### fanout" in out and "### connect" in out and "ok 100/100" in out
    (path,) = tmp_path.glob("fanout-connect-*.json")
    data = json.loads(path.read_text())
    assert [row["scenario"] for row in data["rows"]] == ["fanout", "connect"]
    assert data["machine"]["cores"] and data["peers"] == []
    assert len(list(tmp_path.glob("*.png"))) == (0 if "matplotlib not" in out else 1)
    assert children() == before


def test_cluster_counts_are_exact(procs: Processes, monkeypatch: pytest.MonkeyPatch) -> None:
    """Our server on the memory engine, then two workers on the Redis engine (a Supervisor
    and a redis-server started by the scenario), then Redis as the peer: the same shapes,
    exact counts on every row, the cluster's CPU in parts, no worker left behind."""
    _need_redis()
    workers: list[tuple[int, int]] = []
    start = PubSubCluster.start

    def start_and_note(cluster: PubSubCluster) -> None:
        start(cluster)
        workers.extend(cluster.workers.values())

    monkeypatch.setattr(PubSubCluster, "start", start_and_note)
    options = replace(
        TINY, cluster_sizes=(1, 3), cluster_latency_sizes=(4,), cluster_rate=2000
    )  # fmt: skip
    pinning = make_pinning()
    bench = Bench(options, procs, pinning, Progress())
    rows: list[Row] = []
    for server in (PubSub(procs, pinning, max_queue_size=DEEP_QUEUE), Redis(procs, pinning)):
        server.start()
        try:
            rows += RUNNERS["cluster"](bench, server)
        finally:
            server.stop()
    assert len(workers) == 2
    assert all(start_time(pid) != started for pid, started in workers)  # all gone
    clustered = "redis engine, 2 nodes"
    ours = [row for row in rows if row["server"] == "trio-pubsub"]
    peer = [row for row in rows if row["server"] == "redis"]
    assert [(row["param"], row["variant"]) for row in ours] == [
        (param, variant) for param in (1, 3, 4) for variant in (MEMORY_VARIANT, clustered)
    ]
    assert [(row["param"], row["variant"]) for row in peer] == [
        (row["param"], row["variant"]) for row in ours
    ]
    for row in rows:
        assert row["exact"], row
        assert row["check"].startswith("ok ")
        assert row["deliveries"] == row["expected"] > 0
        assert row["lost"] == row["duplicated"] == row["order_errors"] == row["closed"] == 0
        assert row["acked"] == row["published"]
        assert row["us_per_delivery"] is not None
        # Flooded runs sample latency on some chunks only; paced runs time every message.
        assert row["p99_ms"] is not None or not row["paced"]
    # Flooded: 300 deliveries each (S=1: 300 messages, S=3: 100); paced: 2,000
    # deliveries/s to 4 subscribers for a second, the first half second warm-up.
    assert [row["published"] for row in ours] == [300, 300, 100, 100, 500, 500]
    assert [row["deliveries"] for row in ours] == [300, 300, 300, 300, 2000, 2000]
    assert [row["latency_samples"] for row in ours[4:]] == [4 * 250, 4 * 250]
    assert [row["paced"] for row in ours] == [0, 0, 0, 0, 500, 500]
    for row in ours:
        node_us = row["node_us_per_delivery"]
        assert node_us is not None and row["us_per_delivery"] is not None
        if row["variant"] == clustered:
            assert set(row["cpu_parts"]) == {"nodes", "redis"}
            assert row["server_dropped"] is None  # each node counts its own
            # Sums of floats: equal parts may differ in the last digits.
            assert node_us <= row["us_per_delivery"] + 1e-6
        else:
            assert set(row["cpu_parts"]) == {"nodes"}
            assert row["server_dropped"] == 0
    for row in peer:
        assert row["cpu_parts"] == {} and row["node_us_per_delivery"] is None
    table = report.markdown(rows, ["trio-pubsub", "redis"], [])
    assert "### cluster" in table and "node CPU us/delivery" in table
    assert f"subscribers=1, {clustered}" in table and "subscribers=1, memory engine" in table
    lines = report.checklist(rows, "trio-pubsub")
    assert [line.split(" ", 1)[0] in ("PASS", "MISS") for line in lines] == [True, True]
    assert "single publisher" in lines[0] and "2,000 deliveries/s S=4" in lines[1]
