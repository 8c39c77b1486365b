"""REST fuzzing from the server's own OpenAPI document (schemathesis).

A real server process serves ``/openapi.json``; schemathesis reads it there and
sends every operation generated requests, valid and invalid (wrong types,
missing fields, a missing or wrong API key). No answer may be a 5xx, and every
answer must be one the document describes: its status code, content type,
headers and body. The server must still run afterwards and have logged no
traceback.

Calls on ``/topics/{name}...`` go half the time to a topic that exists, so the
routes run past their 404. Schemathesis leaves out ``GET /openapi.json``, the
document it was loaded from (loading it is its test).

The run is bounded: ``PUBSUB_SCHEMATHESIS_EXAMPLES`` examples per operation (100
by default; the checks that routes got past auth and 404 want at least 25), no
shrinking, and a timeout on every request. Examples are derandomized, so CI
fuzzes the same inputs every time; raise the count locally to search further.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import httpx
import pytest
import schemathesis
import trio
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import APIOperation, Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Err
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

EXAMPLES = int(os.environ.get("PUBSUB_SCHEMATHESIS_EXAMPLES", "100"))
#: Seconds; a request that takes longer is a failure, not a hung test.
REQUEST_TIMEOUT = 10.0
API_KEY = "fuzz-key"
#: A topic that exists: generated names almost never do, so without it every
#: call on ``/topics/{name}...`` would stop at 404.
TOPIC = "fuzzed"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
Operation: TypeAlias = APIOperation[Any, Any, Any, Any]
LISTENING = re.compile(rb"listening on http://127\.0\.0\.1:(\d+)")
#: The start of a record of ``LOG_FORMAT=text``, with its level.
RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (\w+) ", re.MULTILINE)


class ServerProcess:
    """``python -m pubsub serve --port 0`` with its log read as it comes (a full
    pipe would stop the server mid-run)."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.log = bytearray()
        self.port = 0
        self._listening = trio.Event()

    async def read_log(self) -> None:
        stderr = self.process.stderr
        assert stderr is not None
        while chunk := await stderr.receive_some(65536):
            self.log += chunk
            if not self._listening.is_set() and (match := LISTENING.search(self.log)):
                self.port = int(match.group(1))
                self._listening.set()
        self._listening.set()  # exited: wait_listening() says so

    async def wait_listening(self) -> int:
        with trio.fail_after(30):
            await self._listening.wait()
        assert self.port, f"the server did not start:\n{self.log.decode(errors='replace')}"
        return self.port

    def errors(self) -> str:
        """The log's ERROR and CRITICAL records, and anything with a traceback
        ('' if none)."""
        text = self.log.decode(errors="replace")
        bounds = sorted({0, *(m.start() for m in RECORD.finditer(text))})
        records = [text[a:b] for a, b in zip(bounds, [*bounds[1:], len(text)], strict=True)]
        return "".join(
            record
            for record in records
            if "Traceback" in record
            or ((m := RECORD.match(record)) is not None and m.group(1) in ("ERROR", "CRITICAL"))
        )


@dataclass
class Run:
    """What a fuzzing run saw."""

    #: Every operation run, as ``"GET /topics"``.
    operations: list[str] = field(default_factory=list)
    #: Schemathesis' report of each failing operation (request, answer, curl).
    failures: list[str] = field(default_factory=list)
    #: How often each operation answered each status.
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)


def fuzz(base_url: str, api_key: str | None) -> Run:
    """Run every operation of the server's document.

    Blocking (schemathesis calls with ``requests``): run it in a thread."""
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json", timeout=REQUEST_TIMEOUT)
    headers = {"X-API-Key": api_key} if api_key is not None else {}
    run = Run()
    with httpx.Client(base_url=base_url, headers=headers, timeout=REQUEST_TIMEOUT) as client:
        for result in schema.get_all_operations():
            if isinstance(result, Err):  # the document describes it wrongly
                run.failures.append(f"{type(result.err()).__name__}: {result.err()}")
                continue
            operation = result.ok()
            run.operations.append(operation.label)
            try:
                fuzz_operation(operation, base_url, headers, client, run.statuses)
            # A failed check raises schemathesis' FailureGroup, a BaseExceptionGroup.
            except (Exception, BaseExceptionGroup) as exc:
                run.failures.append(f"{operation.label}: {type(exc).__name__}\n{exc}")
    return run


def fuzz_operation(
    operation: Operation,
    base_url: str,
    headers: dict[str, str],
    client: httpx.Client,
    statuses: Counter[tuple[str, int]],
) -> None:
    """``EXAMPLES`` generated calls of ``operation``, valid and invalid; raises
    what the failing ones raised (``client`` makes sure :data:`TOPIC` exists)."""
    cases = [operation.as_strategy(mode) for mode in GenerationMode]
    if "{name}" in operation.path:
        named = {"name": TOPIC}
        cases += [operation.as_strategy(mode, path_parameters=named) for mode in GenerationMode]

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=st.one_of(cases))
    def call(case: Case[Operation]) -> None:
        if (case.path_parameters or {}).get("name") == TOPIC:
            # Deleted by an earlier example, maybe: 201 or 409 both leave it there.
            client.post("/topics", json={"name": TOPIC})
        # No session: a new connection per request, so one stuck connection
        # cannot fail the examples after it.
        response = case.call_and_validate(
            base_url=base_url, headers=headers, checks=CHECKS, timeout=REQUEST_TIMEOUT
        )
        statuses[operation.label, response.status_code] += 1

    call()


@pytest.mark.parametrize("api_key", [None, API_KEY], ids=["open", "api_key"])
async def test_every_operation_answers_as_documented_and_never_5xx(api_key: str | None) -> None:
    env = {**os.environ, "LOG_FORMAT": "text"}
    env.pop("API_KEY", None)
    if api_key is not None:
        env["API_KEY"] = api_key
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "pubsub", "serve", "--port", "0"],
        stderr=subprocess.PIPE,
        env=env,
    )
    server = ServerProcess(process)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.read_log)
            port = await server.wait_listening()
            base_url = f"http://127.0.0.1:{port}"
            run = await trio.to_thread.run_sync(fuzz, base_url, api_key)
            alive = process.poll() is None
            process.kill()  # ends read_log, and with it the nursery

        failures, statuses, log = run.failures, run.statuses, server.errors()
        assert not failures, "\n\n".join(failures) + f"\n\nserver log:\n{log}"
        assert alive, f"the server exited during the run:\n{server.log.decode(errors='replace')}"
        assert not log, log
        assert len(run.operations) >= 12, run.operations
        for operation in run.operations:
            answers = {status for (label, status) in statuses if label == operation}
            # It ran, and the right key (or none needed) got past auth.
            assert answers - {401}, (operation, statuses)
        if api_key is not None:
            # ... and a missing or wrong one did not.
            assert statuses["GET /topics", 200] and statuses["GET /topics", 401], statuses
        # The topic that exists took publishes, and was read and deleted.
        for operation, status in [
            ("POST /topics/{name}/messages", 201),
            ("GET /topics/{name}/messages", 200),
            ("GET /topics/{name}", 200),
            ("DELETE /topics/{name}", 200),
        ]:
            assert statuses[operation, status], statuses
    finally:
        if process.returncode is None:
            process.kill()
        with trio.fail_after(30):
            await process.wait()
