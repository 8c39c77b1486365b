"""The client commands end to end through the console script, against a real server."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import trio
from support import base_url, create_topics, running

from pubsub.client import open_client

from .shell import SCRIPT, Output, cli


async def test_topics_commands() -> None:
    async with running() as server:
        created = await cli(server, "topics", "create", "orders")
        assert (created.returncode, created.stdout) == (0, b"created orders\n")
        again = await cli(server, "topics", "create", "orders")
        assert again.returncode == 1
        assert b"TOPIC_EXISTS" in again.stderr
        listed = await cli(server, "topics", "list")
        assert listed.returncode == 0
        header, row = listed.stdout.decode().splitlines()
        assert header.split() == ["NAME", "SUBSCRIBERS", "MESSAGES", "CREATED"]
        assert row.split()[:3] == ["orders", "0", "0"]
        shown = await cli(server, "topics", "show", "orders")
        assert b"epoch:" in shown.stdout and b"stored:" in shown.stdout
        missing = await cli(server, "topics", "show", "nope")
        assert missing.returncode == 1
        assert b"TOPIC_NOT_FOUND" in missing.stderr
        deleted = await cli(server, "topics", "delete", "orders")
        assert (deleted.returncode, deleted.stdout) == (0, b"deleted orders\n")


async def test_pub_from_stdin_then_sub_prints_line_delimited_json() -> None:
    async with running() as server:
        await server.node.create_topic("t")
        lines = b'{"a": 1}\n\n[1, 2]\n"three"\n'
        published = await cli(server, "pub", "t", "--verbose", stdin=lines)
        assert published.returncode == 0, published.stderr
        acks = published.stdout.decode().splitlines()
        assert [line.split()[2] for line in acks] == ["offset=1", "offset=2", "offset=3"]
        single = await cli(server, "pub", "t", '{"n": 4}', "--id", "m4")
        assert (single.returncode, single.stdout) == (0, b"")

        got = await cli(server, "sub", "t", "--last-n", "4", "--count", "4", "--json")
        assert got.returncode == 0, got.stderr
        events = [json.loads(line) for line in got.stdout.splitlines()]
        assert [e["payload"] for e in events] == [{"a": 1}, [1, 2], "three", {"n": 4}]
        assert [e["offset"] for e in events] == [1, 2, 3, 4]
        assert events[3]["id"] == "m4"

        plain = await cli(server, "sub", "t", "--last-n", "1", "--count", "1")
        assert plain.stdout == b't 4 {"n": 4}\n'


async def test_stats_prints_a_table() -> None:
    async with running() as server:
        await server.node.create_topic("t")
        shown = await cli(server, "stats")
        assert shown.returncode == 0
        text = shown.stdout.decode()
        assert "topics" in text and "delivered" in text
        assert any(line.split()[:1] == ["t"] for line in text.splitlines())


async def test_errors_give_clear_messages_and_exit_codes() -> None:
    async with running(api_key="k") as server:
        await server.node.create_topic("t")
        denied = await cli(server, "topics", "list")
        assert denied.returncode == 1
        assert b"UNAUTHORIZED" in denied.stderr
        denied_ws = await cli(server, "pub", "t", "1")
        assert denied_ws.returncode == 1
        assert b"UNAUTHORIZED" in denied_ws.stderr
        allowed = await cli(server, "pub", "t", "1", "--api-key", "k")
        assert allowed.returncode == 0
        missing = await cli(server, "pub", "nope", "1", "--api-key", "k")
        assert missing.returncode == 1
        assert b"TOPIC_NOT_FOUND" in missing.stderr
        bad_json = await cli(server, "pub", "t", "{oops", "--api-key", "k")
        assert bad_json.returncode == 2
        assert b"not JSON" in bad_json.stderr
        port = server.port
    for command in (["stats"], ["sub", "t"], ["pub", "t", "1"]):
        gone = await cli(None, *command, url=f"http://127.0.0.1:{port}")
        assert gone.returncode == 3, command
        assert b"127.0.0.1" in gone.stderr


async def test_history_prints_stored_messages_after_an_offset() -> None:
    async with running() as server:
        await server.node.create_topic("t")
        published = await cli(server, "pub", "t", stdin=b'{"n": 1}\n[2]\n"three"\n')
        assert published.returncode == 0, published.stderr
        plain = await cli(server, "history", "t", "--since", "1")
        assert plain.returncode == 0, plain.stderr
        lines = plain.stdout.decode().splitlines()
        assert [line.split()[0] for line in lines] == ["2", "3"]
        assert [line.split()[-1] for line in lines] == ["[2]", '"three"']
        limited = await cli(server, "history", "t", "--limit", "1", "--json")
        [stored] = [json.loads(line) for line in limited.stdout.splitlines()]
        assert (stored["topic"], stored["offset"], stored["message"]["payload"]) == (
            "t",
            1,
            {"n": 1},
        )
        missing = await cli(server, "history", "nope")
        assert missing.returncode == 1
        assert b"TOPIC_NOT_FOUND" in missing.stderr
        too_many = await cli(server, "history", "t", "--limit", "5000")
        assert too_many.returncode == 1
        assert b"BAD_REQUEST" in too_many.stderr


async def test_sub_with_a_filter_prints_only_matching_events() -> None:
    async with running() as server:
        await server.node.create_topic("orders")
        lines = b"".join(b'{"amount": %d}\n' % amount for amount in (500, 50, 150, 20, 101))
        published = await cli(server, "pub", "orders", stdin=lines)
        assert published.returncode == 0, published.stderr
        big = '{"path": "payload.amount", "op": "gt", "value": 100}'
        got = await cli(
            server, "sub", "orders", "--filter", big, "--last-n", "2", "--count", "2", "--json"
        )
        assert got.returncode == 0, got.stderr
        events = [json.loads(line) for line in got.stdout.splitlines()]
        assert [(e["offset"], e["payload"]) for e in events] == [
            (3, {"amount": 150}),
            (5, {"amount": 101}),
        ]
        plain = await cli(server, "sub", "orders", "--filter", big, "--last-n", "1", "--count", "1")
        assert plain.stdout == b'orders 5 {"amount": 101}\n'
        # A filter the contract's grammar refuses, named by the part that is wrong.
        refused = await cli(server, "sub", "orders", "--filter", '{"path": "payload", "op": "is"}')
        assert refused.returncode == 1
        assert b"BAD_REQUEST" in refused.stderr and b"filter.op" in refused.stderr


async def test_bad_v12_arguments_are_usage_errors() -> None:
    async with running() as server:
        await server.node.create_topic("t")
        for args, says in (
            (["sub", "t", "--filter", "{oops"], b"--filter is not JSON"),
            (["sub", "t", "--filter", "[1, 2]"], b"--filter must be a JSON object"),
            (["sub", "orders.*", "--last-n", "1"], b"--last-n cannot be used with a pattern"),
            (["sub", "orders.eu*"], b"wildcard must be a whole segment"),
            (["pub", "t", "1", "--ttl-ms", "0"], b"--ttl-ms must be at least 1"),
        ):
            refused = await cli(server, *args)
            assert refused.returncode == 2, args
            assert says in refused.stderr, (args, refused.stderr)


async def test_pub_with_a_ttl_gives_events_an_expiry() -> None:
    async with running() as server:
        await server.node.create_topic("t")
        lasting = await cli(server, "pub", "t", '"lasting"', "--ttl-ms", "60000")
        assert lasting.returncode == 0, lasting.stderr
        forever = await cli(server, "pub", "t", '"forever"')
        assert forever.returncode == 0, forever.stderr
        got = await cli(server, "sub", "t", "--last-n", "2", "--count", "2", "--json")
        assert got.returncode == 0, got.stderr
        first, second = [json.loads(line) for line in got.stdout.splitlines()]
        assert first["payload"] == "lasting" and first["expires_at"] > first["ts"]
        assert second["payload"] == "forever" and "expires_at" not in second


async def test_sub_with_patterns_prints_each_event_once_with_its_topic() -> None:
    async with running() as server:
        await create_topics(server, "orders.eu", "orders.us", "stock.eu", "orders.eu.paris")
        process = await trio.lowlevel.open_process(
            [SCRIPT, "sub", "orders.*", "*.eu", "--url", base_url(server)],
            stdout=subprocess.PIPE,
        )
        output = Output(process)
        async with (
            trio.open_nursery() as nursery,
            open_client(f"ws://127.0.0.1:{server.port}/ws") as client,
        ):
            nursery.start_soon(output.collect)
            try:
                # Patterns get live events only. The command subscribes in argument
                # order and only the last pattern matches stock.eu: once a probe is
                # printed, both are subscribed.
                probes = 0
                while not output.lines:
                    assert process.returncode is None, f"sub exited with {process.returncode}"
                    probes += 1
                    await client.publish("stock.eu", {"probe": probes})
                await client.publish("orders.eu.paris", "neither")
                await client.publish("orders.eu", "both")
                # One last event for each pattern alone: a duplicate of "both"
                # would be printed before its subscription's last event.
                await client.publish("orders.us", "first only")
                await client.publish("stock.eu", "second only")
                await output.wait_for(lambda lines: sum("only" in line for line in lines) == 2)
            finally:
                process.kill()  # which ends output.collect
        await process.wait()
        events = [line for line in output.lines if "probe" not in line]
        assert sorted(events) == [
            'orders.eu 1 "both"',
            'orders.us 1 "first only"',
            f'stock.eu {probes + 1} "second only"',
        ]
        assert len(output.lines) == len(set(output.lines))


async def test_topics_list_json_prints_one_object_per_topic() -> None:
    async with running() as server:
        await create_topics(server, "a", "b")
        listed = await cli(server, "topics", "list", "--json")
        assert listed.returncode == 0, listed.stderr
        topics = [json.loads(line) for line in listed.stdout.splitlines()]
        assert [(t["name"], t["subscribers"], t["messages"]) for t in topics] == [
            ("a", 0, 0),
            ("b", 0, 0),
        ]


async def test_pub_raw_publishes_each_line_as_a_string() -> None:
    async with running() as server:
        await server.node.create_topic("t")
        lines = b'plain text\n{"not": "parsed"}\n\nlast line without a newline'
        published = await cli(server, "pub", "t", "--raw", stdin=lines)
        assert published.returncode == 0, published.stderr
        single = await cli(server, "pub", "t", "--raw", "an argument too")
        assert single.returncode == 0, single.stderr
        got = await cli(server, "history", "t", "--json")
        payloads = [json.loads(line)["message"]["payload"] for line in got.stdout.splitlines()]
        assert payloads == [
            "plain text",
            '{"not": "parsed"}',
            "",
            "last line without a newline",
            "an argument too",
        ]


async def test_pub_stops_at_the_first_bad_line_naming_it() -> None:
    async with running() as server:
        await server.node.create_topic("t")
        published = await cli(server, "pub", "t", stdin=b'1\nhello\n{"n": 3}\n')
        assert published.returncode == 2
        assert published.stderr.startswith(b"trio-pubsub: line 2: not JSON: 'hello'")
        assert b"--raw" in published.stderr  # the way to publish text
        got = await cli(server, "history", "t", "--json")
        assert [json.loads(line)["message"]["payload"] for line in got.stdout.splitlines()] == [1]


async def test_pub_keep_going_reports_each_bad_line_and_exits_1() -> None:
    async with running() as server:
        await server.node.create_topic("t")
        lines = b'1\nhello\n{"n": 3}\n[oops\n"five"\n'
        published = await cli(server, "pub", "t", "--keep-going", stdin=lines)
        assert published.returncode == 1
        errors = published.stderr.decode().splitlines()
        assert [line.split(":")[1].strip() for line in errors[:2]] == ["line 2", "line 4"]
        assert "not JSON" in errors[0] and "not JSON" in errors[1]
        assert errors[2] == "trio-pubsub: 2 of 5 lines were not published"
        assert len(errors) == 3
        got = await cli(server, "history", "t", "--json")
        payloads = [json.loads(line)["message"]["payload"] for line in got.stdout.splitlines()]
        assert payloads == [1, {"n": 3}, "five"]
        # A line the server refuses is reported the same way, and the run goes on.
        missing = await cli(server, "pub", "nope", "--keep-going", stdin=b"1\n2\n")
        assert missing.returncode == 1
        assert missing.stderr.decode().splitlines() == [
            "trio-pubsub: line 1: TOPIC_NOT_FOUND: topic 'nope' does not exist",
            "trio-pubsub: line 2: TOPIC_NOT_FOUND: topic 'nope' does not exist",
            "trio-pubsub: 2 of 2 lines were not published",
        ]
        clean = await cli(server, "pub", "t", "--keep-going", stdin=b"6\n")
        assert (clean.returncode, clean.stderr) == (0, b"")
        with_argument = await cli(server, "pub", "t", "1", "--keep-going")
        assert with_argument.returncode == 2


async def test_a_url_that_names_no_broker_is_bad_usage() -> None:
    cases = [(url, ["stats"]) for url in ("localhost:3000", "http://", "http://127.0.0.1:99999")]
    cases += [("foo", command) for command in (["stats"], ["sub", "t"], ["pub", "t", "1"])]
    for url, command in cases:
        refused = await cli(None, *command, url=url)
        assert refused.returncode == 2, (url, command)
        assert refused.stderr.startswith(f"trio-pubsub: --url {url!r} ".encode()), refused.stderr


async def test_the_api_key_can_come_from_a_file(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("k\n")
    async with running(api_key="k") as server:
        await server.node.create_topic("t")
        allowed = await cli(server, "pub", "t", "1", "--api-key-file", str(key_file))
        assert allowed.returncode == 0, allowed.stderr
        listed = await cli(server, "topics", "list", "--api-key-file", str(key_file))
        assert listed.returncode == 0, listed.stderr
        missing = await cli(server, "stats", "--api-key-file", str(tmp_path / "nope"))
        assert missing.returncode == 2
        assert missing.stderr.startswith(b"trio-pubsub: --api-key-file: cannot read ")
