"""``trio-pubsub serve`` and ``config``: settings from flags, environment and a
file, logging, signals, and what a failure to serve says."""

from __future__ import annotations

import argparse
import errno
import logging
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Sequence
from typing import Final

import msgspec
import trio

from .._core.node import default_node_id
from .._server.logs import JsonFormatter
from .._server.server import Server, make_engine
from .._settings import FIELD_NAMES, SECRETS, Settings, describe
from .._version import __version__
from .commands import add_commands, run_command
from .config import (
    CONFIG_ENV,
    SECRET_FILES,
    Config,
    ConfigError,
    check,
    flag_name,
    load,
    report,
    template,
)
from .declared import DeclarationError, DeclaringEngine
from .exits import (
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    ending,
    leaves,
)
from .messages import late_message
from .supervisor import SUPERVISOR_ENV, WORKER_ENV, Supervisor, watch_parent


def configure_logging(settings: Settings) -> None:
    """Log to stderr at ``LOG_LEVEL``, as text or one JSON object per line."""
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        formatter: logging.Formatter = JsonFormatter()
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
        description="Run the broker. Settings come from flags, which override environment "
        "variables (NAME, or PUBSUB_NAME which wins over NAME), which override the "
        "configuration file (--config), which overrides the defaults. Exit codes: 0 "
        "stopped by SIGTERM/SIGINT, 1 failed, 2 bad settings, 3 cannot listen on the "
        "address.",
    )
    serve.add_argument(
        "--config",
        metavar="FILE",
        help=f"a TOML file of settings and topics (env {CONFIG_ENV}; "
        "`trio-pubsub config init` writes one)",
    )
    defaults = Settings()
    for name in FIELD_NAMES:
        default = getattr(defaults, name)
        shown = "unset" if default is None else default
        serve.add_argument(
            flag_name(name),
            dest=name,
            metavar=name.upper(),
            help=f"{describe(name)} (env {name.upper()}, default {shown})",
        )
        if name in SECRETS:
            serve.add_argument(
                flag_name(f"{name}_file"),
                dest=f"{name}_file",
                metavar="FILE",
                help=f"read {name.upper()} from FILE, keeping it off the command line "
                f"(env {name.upper()}_FILE)",
            )
    config = commands.add_parser("config", help="write or check a configuration file for serve")
    actions = config.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser(
        "init",
        help="print a commented configuration file with every setting at its default",
    )
    checking = actions.add_parser(
        "check",
        help="check a configuration file and print the effective settings (exit 0, or 2)",
        description="Load FILE as serve would (with the environment on top of it) and print "
        "the effective settings, secrets masked, each with where it came from.",
    )
    checking.add_argument("file", nargs="?", metavar="FILE", help=f"default: ${CONFIG_ENV}")
    add_commands(commands)
    return parser


def _flags(args: argparse.Namespace) -> dict[str, str | None]:
    """The setting flags (and secret-file flags) as given; None: not given."""
    names = (*FIELD_NAMES, *SECRET_FILES)
    return {name: getattr(args, name) for name in names}


def _config_command(args: argparse.Namespace) -> int:
    if args.action == "init":
        sys.stdout.write(template())
        return EXIT_OK
    environ = dict(os.environ)
    path = args.file or environ.get(CONFIG_ENV)
    if not path:
        print(f"trio-pubsub: error: config check needs a FILE (or {CONFIG_ENV})", file=sys.stderr)
        return EXIT_USAGE
    try:
        config = check(load({}, environ, path))
    except ConfigError as exc:
        print(f"trio-pubsub: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    sys.stdout.write(report(config))
    return EXIT_OK


async def _serve(config: Config, worker: bool) -> None:
    settings = config.settings
    server: Server
    if config.topics:
        # The declared topics are created by the engine before the server listens.
        if settings.node_id is None:
            settings = settings.replace(node_id=default_node_id())
        engine = DeclaringEngine(
            make_engine(settings), config.topics, message_ttl=settings.message_ttl
        )
        server = Server(settings, engine, reuse_port=worker)
    else:
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


#: What a failure to listen says, by errno.
_LISTEN_ERRORS: Final = {
    errno.EADDRINUSE: "address already in use (another process listens there: stop it, "
    "or choose another --port; 0 picks a free one)",
    errno.EACCES: "permission denied (ports below 1024 need privileges)",
    errno.EADDRNOTAVAIL: "address not available (HOST is not an address of this machine)",
}


def _failure(error: BaseException, settings: Settings) -> tuple[str, int] | None:
    """What ``serve`` says about ``error`` (maybe a group), and its exit code."""
    found = leaves(error)
    where = f"{settings.host}:{settings.port}"
    for leaf in found:
        if isinstance(leaf, socket.gaierror):
            return f"cannot listen on {where}: unknown host ({leaf.strerror})", EXIT_UNREACHABLE
        if isinstance(leaf, OSError) and leaf.errno in _LISTEN_ERRORS:
            return f"cannot listen on {where}: {_LISTEN_ERRORS[leaf.errno]}", EXIT_UNREACHABLE
    for leaf in found:
        if isinstance(leaf, DeclarationError):
            return f"cannot serve: {leaf}", EXIT_REFUSED
        if isinstance(leaf, OSError):
            return f"cannot serve: {leaf.strerror or leaf}", EXIT_REFUSED
    return None


def _load(args: argparse.Namespace, worker: str | None) -> Config:
    """The configuration: the supervisor's (on stdin) for a worker, else from
    the file, the environment and the flags."""
    if worker is None:
        config = load(_flags(args), os.environ, args.config)
    else:
        try:
            config = msgspec.json.decode(sys.stdin.buffer.read(), type=Config)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise ConfigError(
                f"worker {worker}: bad configuration from the supervisor: {exc}"
            ) from None
    return check(config, worker)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``trio-pubsub``."""
    try:
        code = _main(argv)
        # A reader that went away shows here rather than at the interpreter's exit.
        sys.stdout.flush()
    except (KeyboardInterrupt, BrokenPipeError) as exc:
        # Ctrl-C before a command took SIGINT over (or after), or `| head`.
        quiet = ending(exc)
        assert quiet is not None
        return quiet
    return code


def _main(argv: Sequence[str] | None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not late_message(args, extra):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "config":
        return _config_command(args)
    if args.command != "serve":
        return run_command(args)
    worker = os.environ.get(WORKER_ENV)
    try:
        config = _load(args, worker)
    except ConfigError as exc:
        parser.exit(EXIT_USAGE, f"trio-pubsub: error: {exc}\n")
    settings = config.settings
    configure_logging(settings)
    log = logging.getLogger("pubsub.server")
    log.info(
        "trio-pubsub %s starting%s (pid %d) with %s%s",
        __version__,
        f" as worker {worker}" if worker else "",
        os.getpid(),
        msgspec.json.encode(settings.public()).decode(),
        f" and topics {[topic.name for topic in config.topics]}" if config.topics else "",
    )
    try:
        if settings.workers > 1 and worker is None:
            trio.run(Supervisor(config).run)
        else:
            trio.run(_serve, config, worker is not None)
    except Exception as exc:
        failure = _failure(exc, settings)
        if failure is None:
            raise
        message, code = failure
        log.error("%s", message)
        return code
    return EXIT_OK
