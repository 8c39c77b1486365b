"""wss:// beside ws://: the same fan-out through the broker's TLS and plain paths.

``python -m bench tls [--fanout-sizes 1,100,1000] [--messages N] [--quick]``

For each size S, a broker process (pinned to core 0) is started twice, once plain
and once with ``--tls-cert``/``--tls-key`` (a throwaway self-signed certificate
made with ``openssl``); this process (pinned to the other cores) opens S
subscribers and one publisher and sends N messages of 100 bytes. Reported: the
broker's CPU microseconds per delivered message (its CPU-time clock before and
after the sends), deliveries per second, the broker's RSS per
connection, and wss/ws as a ratio. The load is the same Trio code for both (the
client side counts event frames without decoding them), so the ratio is the
figure to read; the absolute numbers are below what :mod:`bench.loadgen`'s raw
clients reach. Bounded: every wait has a deadline; the brokers are stopped by PID.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import trio

from bench.loadgen import HOST, client_frame, ws_request
from bench.procs import cpu_seconds

EVENT_MARK: Final = b'"type":"event"'
ACK_MARK: Final = b'"type":"ack"'
#: Every wait of a run ends by then, whatever happens.
RUN_DEADLINE: Final = 300.0
SERVER_FLAGS: Final = [
    "--max-queue-size", "100000000",
    "--max-connections", "20000",
    "--max-subscribers-per-topic", "20000",
    "--heartbeat-interval", "3600000",
    "--connection-timeout", "3600000",
    "--log-level", "info",
    "--auto-create-topics", "true",
]  # fmt: skip


@contextlib.contextmanager
def certificate() -> Iterator[tuple[str, str]]:
    """A self-signed certificate for 127.0.0.1 (openssl), removed afterwards."""
    with tempfile.TemporaryDirectory() as folder:
        cert, key = str(Path(folder, "cert.pem")), str(Path(folder, "key.pem"))
        subprocess.run(
            [
                "openssl", "req", "-x509", "-newkey", "ec",
                "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                "-keyout", key, "-out", cert, "-days", "1",
                "-subj", f"/CN={HOST}", "-addext", f"subjectAltName=IP:{HOST}",
            ],
            check=True,
            capture_output=True,
        )  # fmt: skip
        yield cert, key


@dataclass
class Broker:
    process: subprocess.Popen[bytes]
    port: int

    def cpu_seconds(self) -> float:
        """The broker's CPU time so far, from its CPU-time clock (ns, not ticks)."""
        return cpu_seconds(self.process.pid)

    def rss_bytes(self) -> int:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        match = re.search(r"VmRSS:\s+(\d+) kB", status)
        assert match is not None
        return int(match.group(1)) * 1024

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_broker(tls: tuple[str, str] | None, log: Path) -> Broker:
    """A broker on a free port (its log, at info for the port it reports, to ``log``)."""
    flags = ["--port", "0", *SERVER_FLAGS]
    if tls is not None:
        flags += ["--tls-cert", tls[0], "--tls-key", tls[1]]
    with log.open("wb") as sink:
        process = subprocess.Popen(
            ["taskset", "-c", "0", sys.executable, "-m", "pubsub", "serve", *flags],
            stderr=sink,
        )
    deadline = time.monotonic() + 30
    while (match := re.search(r"listening on https?://[\d.]+:(\d+)", log.read_text())) is None:
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            process.wait()
            raise RuntimeError(f"the broker did not start: {log.read_text()}")
        time.sleep(0.05)
    return Broker(process, int(match.group(1)))


class Conn:
    """One WebSocket connection, plain or TLS, that counts marks in what it reads."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.buffer = b""

    @classmethod
    async def open(cls, port: int, context: ssl.SSLContext | None) -> Conn:
        tcp = await trio.open_tcp_stream(HOST, port)
        stream: trio.abc.Stream = tcp
        if context is not None:
            stream = trio.SSLStream(tcp, context, server_hostname=HOST)
        conn = cls(stream)
        await stream.send_all(ws_request(port))
        await conn.read_until(b"connected")
        return conn

    async def read_until(self, mark: bytes) -> None:
        while mark not in self.buffer:
            chunk = await self.stream.receive_some(65536)
            if not chunk:
                raise RuntimeError("the broker closed the connection")
            self.buffer += chunk
        self.buffer = b""

    async def count(self, mark: bytes, expected: int) -> None:
        """Read until ``mark`` was seen ``expected`` times (a mark split across two
        reads is found: the last few bytes are kept)."""
        seen = 0
        tail = b""
        keep = len(mark) - 1
        while seen < expected:
            chunk = await self.stream.receive_some(262144)
            if not chunk:
                raise RuntimeError("the broker closed the connection")
            data = tail + bytes(chunk)
            seen += data.count(mark)
            tail = data[-keep:]


@dataclass
class Result:
    cpu_us_per_delivery: float
    deliveries_per_second: float
    rss_per_connection_kb: float


async def fan_out(
    broker: Broker, context: ssl.SSLContext | None, subscribers: int, messages: int
) -> Result:
    topic = f"tls-{subscribers}"
    with trio.fail_after(RUN_DEADLINE):
        publisher = await Conn.open(broker.port, context)
        await publisher.stream.send_all(
            client_frame(
                json.dumps({"type": "subscribe", "topic": topic, "client_id": "bench"}).encode()
            )
        )
        await publisher.read_until(ACK_MARK)  # the topic exists now (auto-created)
        await publisher.stream.send_all(
            client_frame(
                json.dumps({"type": "unsubscribe", "topic": topic, "client_id": "bench"}).encode()
            )
        )
        await publisher.read_until(ACK_MARK)
        rss_before = broker.rss_bytes()
        conns: list[Conn] = []
        for _ in range(subscribers):
            conn = await Conn.open(broker.port, context)
            subscribe = {"type": "subscribe", "topic": topic, "client_id": "bench"}
            await conn.stream.send_all(client_frame(json.dumps(subscribe).encode()))
            await conn.read_until(ACK_MARK)
            conns.append(conn)
        rss_per_connection = (broker.rss_bytes() - rss_before) / subscribers / 1024
        data = "x" * 100
        frames = [
            client_frame(
                json.dumps(
                    {
                        "type": "publish",
                        "topic": topic,
                        "client_id": "bench",
                        "message": {"id": f"m{n}", "payload": data},
                    }
                ).encode()
            )
            for n in range(messages)
        ]
        cpu_before = broker.cpu_seconds()
        started = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for conn in conns:
                nursery.start_soon(conn.count, EVENT_MARK, messages)
            nursery.start_soon(publisher.count, ACK_MARK, messages)
            for start in range(0, messages, 100):
                await publisher.stream.send_all(b"".join(frames[start : start + 100]))
        elapsed = time.perf_counter() - started
        cpu = broker.cpu_seconds() - cpu_before
        for conn in [publisher, *conns]:
            await conn.stream.aclose()
    deliveries = subscribers * messages
    return Result(cpu / deliveries * 1e6, deliveries / elapsed, rss_per_connection)


def main(names: Sequence[str], argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench tls", description=__doc__)
    parser.add_argument("--fanout-sizes", default="1,100,1000")
    parser.add_argument("--messages", type=int, default=0, help="per size (default: by size)")
    parser.add_argument("--quick", action="store_true", help="a tenth of the messages")
    args = parser.parse_args(list(argv))
    sizes = [int(size) for size in args.fanout_sizes.split(",")]
    with contextlib.suppress(AttributeError, OSError):
        others = set(range(os.cpu_count() or 1)) - {0}
        if others:
            os.sched_setaffinity(0, others)  # the load off the broker's core
    client_context = ssl.create_default_context()
    rows: list[str] = []
    with certificate() as (cert, key):
        client_context.load_verify_locations(cert)
        for size in sizes:
            messages = args.messages or max(200, min(20_000, 200_000 // size))
            if args.quick:
                messages = max(20, messages // 10)
            results: dict[str, Result] = {}
            for label, tls in (("ws", None), ("wss", (cert, key))):
                broker = start_broker(tls, Path(cert).with_name(f"{label}.log"))
                try:
                    context = client_context if tls is not None else None
                    results[label] = trio.run(fan_out, broker, context, size, messages)
                finally:
                    broker.stop()
            ws, wss = results["ws"], results["wss"]
            rows.append(
                f"| {size:,} | {messages:,} | {ws.cpu_us_per_delivery:.3f} | "
                f"{wss.cpu_us_per_delivery:.3f} | "
                f"{wss.cpu_us_per_delivery / ws.cpu_us_per_delivery:.2f}x | "
                f"{ws.deliveries_per_second:,.0f} | {wss.deliveries_per_second:,.0f} | "
                f"{ws.rss_per_connection_kb:.1f} | {wss.rss_per_connection_kb:.1f} |"
            )
            print(rows[-1], flush=True)
    print()
    print(
        "| subscribers | messages | ws us/delivery | wss us/delivery | wss/ws | "
        "ws deliveries/s | wss deliveries/s | ws KB/conn | wss KB/conn |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(row)
    return 0


if __name__ == "__main__":
    sys.exit(main(["tls"], sys.argv[1:]))
