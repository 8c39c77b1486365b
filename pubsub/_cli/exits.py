"""How a ``trio-pubsub`` command ends: exit codes, one-line messages, Ctrl-C and
closed pipes.

A command in a shell pipeline ends the way shell tools do: Ctrl-C exits 130
without a traceback; a reader that goes away (``sub --json | head -1``) ends
the command quietly with 0; every failure is one line on stderr with a
documented exit code. Trio and the client library report failures as
exception groups; the leaves of the group decide the outcome, here, for every
command.
"""

from __future__ import annotations

import os
import select
import stat
import sys
from typing import Final

import trio

#: Done (``check``: the broker is healthy).
EXIT_OK: Final = 0
#: The server refused (the message names the error code); ``check``: not healthy.
EXIT_REFUSED: Final = 1
#: Bad usage or input: a flag, a setting, a configuration file, a line of ``pub``.
EXIT_USAGE: Final = 2
#: Client commands: the server could not be reached. ``serve``: the address
#: could not be bound (in use, not permitted, not an address of this machine).
EXIT_UNREACHABLE: Final = 3
#: Ctrl-C (128 + SIGINT, as a shell reports a command that SIGINT ended).
EXIT_INTERRUPTED: Final = 130


class CommandError(Exception):
    """A failure the command reports as one line, with its exit code."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def leaves(error: BaseException) -> list[BaseException]:
    """The exceptions inside ``error``'s (nested) groups, or ``[error]``."""
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in leaves(inner)]
    return [error]


def silence_stdout() -> None:
    """After a broken pipe: point stdout at /dev/null, so that the interpreter's
    final flush of what is still buffered does not fail again (and print
    ``Exception ignored ... BrokenPipeError``)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)


def ending(error: BaseException) -> int | None:
    """The exit code that ``error`` (raised by a command) ends it with quietly:
    130 for Ctrl-C anywhere in it, 0 for a closed stdout; None for others."""
    found = leaves(error)
    if any(isinstance(leaf, KeyboardInterrupt) for leaf in found):
        return EXIT_INTERRUPTED
    if any(isinstance(leaf, BrokenPipeError) for leaf in found):
        silence_stdout()
        return EXIT_OK
    return None


def _stdout_pipe() -> int | None:
    """The file descriptor of stdout when it is a pipe, else None."""
    try:
        fd = sys.stdout.fileno()
        return fd if stat.S_ISFIFO(os.fstat(fd).st_mode) else None
    except (OSError, ValueError):
        return None


async def stdout_closed() -> None:
    """Raise ``BrokenPipeError`` once nobody reads stdout any more (the reading
    end of its pipe is closed); never return otherwise (a terminal, a file).

    A command that prints only when events come (``sub``) would otherwise
    notice a reader that left only at its next event, maybe never.
    """
    fd = _stdout_pipe()
    if fd is None or not hasattr(select, "poll"):
        await trio.sleep_forever()
    assert fd is not None

    def wait_for_hangup() -> None:
        poller = select.poll()
        # No events asked for: poll still reports POLLERR (the pipe has no
        # reader left) and POLLHUP, which is all this waits for.
        poller.register(fd, 0)
        poller.poll()

    await trio.to_thread.run_sync(wait_for_hangup, abandon_on_cancel=True)
    raise BrokenPipeError("stdout: the reader went away")
