"""A subscriber that keeps its place when the connection drops.

    python examples/resume.py --topic orders

then cut its connection (restart the broker, or a proxy in between) while
something publishes. The client reconnects (backing off 0.1 s, doubling up to
10 s) and subscribes again with the last offset it saw and the topic's epoch
(``since_offset`` + ``epoch``): the broker replays what was published in
between, so the offsets printed go on without a hole. When the broker cannot
replay them (it restarted on the memory engine, or they left its replay ring
of ``MAX_MESSAGES_PER_TOPIC``), a ``Gap`` says how many were lost instead.
With ``ENGINE=redis`` the history survives a broker restart.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib

from pubsub.client import Event, Gap, open_client


async def follow(url: str, topic: str, count: int | None, api_key: str | None) -> None:
    async with (
        open_client(
            url, client_id="example-resume", api_key=api_key, backoff_initial=0.1, backoff_max=10
        ) as client,
        client.subscribe(topic) as subscription,
    ):
        print(f"following {topic}", flush=True)
        last: int | None = None
        received = 0
        async for item in subscription:
            match item:
                case Event():
                    hole = last is not None and item.offset != last + 1
                    note = f"  (after {last}: not consecutive)" if hole else ""
                    print(f"#{item.offset}: {item.payload}{note}", flush=True)
                    last = item.offset
                    received += 1
                    if count is not None and received >= count:
                        return
                case Gap():
                    missed = "some" if item.missed is None else item.missed
                    print(f"gap: {missed} messages after #{item.after_offset} ({item.reason})")
                    last = None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:3000")
    parser.add_argument("--topic", default="orders")
    parser.add_argument("--count", type=int, default=None, help="stop after this many")
    parser.add_argument("--api-key", default=None)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(follow(args.url, args.topic, args.count, args.api_key))


if __name__ == "__main__":
    main()
