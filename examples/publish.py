"""Publish messages to a topic and print each acknowledgement.

    trio-pubsub serve --auto-create-topics true     # in another shell
    python examples/publish.py --topic orders --count 5

The acknowledgement carries the offset the topic gave the message: offsets
are consecutive per topic, and a subscriber resumes from them.
"""

from __future__ import annotations

import argparse
import asyncio

from pubsub import TopicNotFound
from pubsub.client import open_client


async def publish(url: str, topic: str, count: int, api_key: str | None) -> None:
    async with open_client(url, client_id="example-publisher", api_key=api_key) as client:
        for number in range(count):
            ack = await client.publish(topic, {"n": number, "text": f"message {number}"})
            print(f"published n={number} at offset {ack.offset}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:3000")
    parser.add_argument("--topic", default="orders")
    parser.add_argument("--count", type=int, default=5)
    parser.add_argument("--api-key", default=None)
    args = parser.parse_args()
    try:
        asyncio.run(publish(args.url, args.topic, args.count, args.api_key))
    except TopicNotFound:
        raise SystemExit(
            f"no topic {args.topic!r}: create it (trio-pubsub topics create {args.topic}) "
            "or start the broker with --auto-create-topics true"
        ) from None


if __name__ == "__main__":
    main()
