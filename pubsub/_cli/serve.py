"""``trio-pubsub serve``: settings from flags and environment, logging, signals."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import msgspec
import trio

from .._server.server import Server
from .._settings import FIELD_NAMES, Settings, SettingsError, describe
from .._version import __version__
from .commands import add_commands, run_command
from .supervisor import SUPERVISOR_ENV, WORKER_ENV, Supervisor, watch_parent


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(settings: Settings) -> None:
    """Log to stderr at ``LOG_LEVEL``, as text or one JSON object per line."""
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        formatter: logging.Formatter = _JsonFormatter()
        formatter.converter = time.gmtime
    else:
        formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trio-pubsub", description="A real-time WebSocket pub/sub message broker."
    )
    parser.add_argument("--version", action="version", version=f"trio-pubsub {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        help="run the broker",
        description="Run the broker. Each flag overrides its environment variable.",
    )
    defaults = Settings()
    for name in FIELD_NAMES:
        default = getattr(defaults, name)
        shown = "unset" if default is None else default
        serve.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            metavar=name.upper(),
            help=f"{describe(name)} (env {name.upper()}, default {shown})",
        )
    add_commands(commands)
    return parser


def load_settings(args: argparse.Namespace, environ: dict[str, str]) -> Settings:
    """Environment variables, then flags on top."""
    flags = {name: getattr(args, name) for name in FIELD_NAMES if getattr(args, name) is not None}
    return Settings.from_env(environ).replace(**flags)


async def _serve(settings: Settings, worker: bool) -> None:
    server = Server(settings, reuse_port=worker)
    async with trio.open_nursery() as nursery:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            nursery.start_soon(_watch_signals, signals, server, nursery.cancel_scope)
            if worker:
                supervisor = int(os.environ.get(SUPERVISOR_ENV) or os.getppid())
                nursery.start_soon(watch_parent, supervisor, server.shutdown)
            await server.serve()
            nursery.cancel_scope.cancel()


async def _watch_signals(
    signals: AsyncIterator[int], server: Server, cancel_scope: trio.CancelScope
) -> None:
    """First SIGTERM/SIGINT: graceful shutdown. Second: stop at once."""
    log = logging.getLogger("pubsub.server")
    async for signum in signals:
        if server.state.draining:
            log.warning("second %s: stopping now", signal.Signals(signum).name)
            cancel_scope.cancel()
            return
        log.info("received %s: shutting down", signal.Signals(signum).name)
        server.shutdown()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``trio-pubsub``."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command != "serve":
        return run_command(args)
    try:
        settings = load_settings(args, dict(os.environ))
    except SettingsError as exc:
        parser.exit(2, f"trio-pubsub: error: {exc}\n")
    if settings.workers > 1 and settings.engine == "memory":
        parser.exit(
            2,
            "trio-pubsub: error: WORKERS: more than one worker needs ENGINE=redis "
            "(with the memory engine each worker would have topics of its own)\n",
        )
    worker = os.environ.get(WORKER_ENV)
    if settings.node_id is not None and (worker is not None or settings.workers > 1):
        # Each worker is NODE_ID-wN: check the longest now, before anything starts.
        try:
            suffix = worker if worker is not None else str(settings.workers)
            named = settings.replace(node_id=f"{settings.node_id}-w{suffix}")
        except SettingsError as exc:
            parser.exit(2, f"trio-pubsub: error: {exc} (NODE_ID plus the worker suffix)\n")
        if worker is not None:
            settings = named
    configure_logging(settings)
    log = logging.getLogger("pubsub.server")
    log.info(
        "trio-pubsub %s starting%s (pid %d) with %s",
        __version__,
        f" as worker {worker}" if worker else "",
        os.getpid(),
        msgspec.json.encode(settings.public()).decode(),
    )
    failed = False
    try:
        if settings.workers > 1 and worker is None:
            raw = list(sys.argv[1:] if argv is None else argv)
            trio.run(Supervisor(settings, raw[raw.index("serve") + 1 :]).run)
        else:
            trio.run(_serve, settings, worker is not None)
    except* OSError as group:  # e.g. the port is taken
        log.error("cannot serve: %s", group.exceptions[0])
        failed = True
    return 1 if failed else 0
