"""Subscribe to a topic (or a pattern like ``orders.*``) and print what arrives.

    python examples/subscribe.py --topic orders --last-n 10

``--last-n`` first replays that many stored messages. The client reconnects by
itself if the connection drops and resumes where it left off (see resume.py);
a ``Gap`` says which messages could not be recovered.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib

from pubsub.client import Event, Gap, open_client


async def subscribe(
    url: str, topic: str, last_n: int, count: int | None, api_key: str | None
) -> None:
    async with (
        open_client(url, client_id="example-subscriber", api_key=api_key) as client,
        client.subscribe(topic, last_n=last_n) as subscription,
    ):
        print(f"subscribed to {topic}", flush=True)
        received = 0
        async for item in subscription:
            match item:
                case Event():
                    print(f"{item.topic} #{item.offset}: {item.payload}", flush=True)
                    received += 1
                    if count is not None and received >= count:
                        return
                case Gap():
                    missed = "some" if item.missed is None else item.missed
                    print(f"missed {missed} messages after offset {item.after_offset}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:3000")
    parser.add_argument("--topic", default="orders")
    parser.add_argument("--last-n", type=int, default=0)
    parser.add_argument("--count", type=int, default=None, help="stop after this many")
    parser.add_argument("--api-key", default=None)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(subscribe(args.url, args.topic, args.last_n, args.count, args.api_key))


if __name__ == "__main__":
    main()
