"""Process control and /proc measurement for the load harness.

Every process the harness starts goes through :class:`Processes`, which stops each one
by its own PID (SIGTERM, then SIGKILL) on the way out, errors, SIGTERM and Ctrl-C
included. Servers run pinned to one core and load processes to another (``taskset``).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import os
import resource
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, Any, Final, cast

LOADGEN: Final = Path(__file__).resolve().with_name("loadgen.py")
#: A load process's configuration longer than this goes in a file (``@PATH``): Linux caps
#: one argument at 128 KiB.
LONGEST_ARGUMENT: Final = 100_000
#: A load process busier than this (share of one core) flags the run as load-bound.
LOAD_BOUND: Final = 0.9


class BenchError(Exception):
    """A run could not be completed (a process failed, a step timed out)."""


class Processes:
    """Every process the harness starts; each is stopped by its own PID."""

    def __init__(self) -> None:
        self._running: list[subprocess.Popen[bytes]] = []

    def start(
        self,
        args: Sequence[str],
        *,
        stdin: int | IO[bytes] | None = subprocess.DEVNULL,
        stdout: int | IO[bytes] | None = subprocess.DEVNULL,
        stderr: int | IO[bytes] | None = None,
    ) -> subprocess.Popen[bytes]:
        popen = subprocess.Popen(list(args), stdin=stdin, stdout=stdout, stderr=stderr)
        self._running.append(popen)
        return popen

    def stop(self, popen: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
        """SIGTERM the process by its PID, wait, SIGKILL it if it does not go."""
        try:
            if popen.poll() is None:
                popen.terminate()
                try:
                    popen.wait(timeout)
                except subprocess.TimeoutExpired:
                    popen.kill()
                    popen.wait(5.0)
        except (OSError, subprocess.TimeoutExpired):
            pass
        if popen in self._running:
            self._running.remove(popen)

    def stop_all(self) -> None:
        for popen in reversed(list(self._running)):
            self.stop(popen)


@contextlib.contextmanager
def managed() -> Iterator[Processes]:
    """A :class:`Processes` whose processes are all stopped on exit; SIGTERM and SIGINT
    (even when inherited as ignored, as in a background job) raise KeyboardInterrupt."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    procs = Processes()
    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield procs
    finally:
        procs.stop_all()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@dataclass(frozen=True)
class Pinning:
    """Which cores the servers and the load run on (``taskset``), if pinning is possible."""

    taskset: str | None
    server_core: int
    load_core: int
    note: str

    def prefix(self, core: int) -> list[str]:
        return [self.taskset, "-c", str(core)] if self.taskset else []

    def server(self) -> list[str]:
        return self.prefix(self.server_core)

    def load(self) -> list[str]:
        return self.prefix(self.load_core)


def make_pinning(server_core: int = 0, load_core: int = 1) -> Pinning:
    """Pin when ``taskset`` exists and both cores are usable; else say why not."""
    taskset = shutil.which("taskset")
    usable = os.sched_getaffinity(0)
    if taskset is None:
        return Pinning(None, server_core, load_core, "not pinned: taskset not found")
    if server_core == load_core or not {server_core, load_core} <= usable:
        note = f"not pinned: cores {server_core} and {load_core} not both usable ({usable})"
        return Pinning(None, server_core, load_core, note)
    return Pinning(
        taskset, server_core, load_core, f"server core {server_core}, load core {load_core}"
    )


def _load_libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None


_LIBC: Final = _load_libc()


def cpu_clock(pid: int) -> int | None:
    """The CPU-time clock of process ``pid`` (``clock_getcpuclockid(3)``), or None."""
    if _LIBC is None or not hasattr(_LIBC, "clock_getcpuclockid"):
        return None
    clock = ctypes.c_int(0)
    if _LIBC.clock_getcpuclockid(ctypes.c_int(pid), ctypes.byref(clock)) != 0:
        return None
    return clock.value


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of process ``pid``, all its threads, dead ones included.

    Read from the process's CPU-time clock, to the nanosecond: a few milliseconds of
    server CPU (a fast server's publishes) would be a handful of ticks in
    ``/proc/PID/stat``'s utime + stime, the fallback, counted in 10 ms clock ticks."""
    clock = cpu_clock(pid)
    if clock is not None:
        with contextlib.suppress(OSError):
            return time.clock_gettime_ns(clock) / 1e9
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    # After "pid (comm)": fields[0] is field 3 (state); utime is field 14, stime 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_time(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks after boot, ``/proc/PID/stat`` field 22),
    or None when there is no such process: with the PID, it names one process for good."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] == "Z" else int(fields[19])


def rss_kb(pid: int) -> int:
    """VmRSS of process ``pid`` from ``/proc/PID/status``."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise BenchError(f"no VmRSS for PID {pid}")


def raise_fd_limit(needed: int) -> None:
    """Raise this process's (and so its children's) open-file soft limit toward ``needed``."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


class Worker:
    """One load process (``loadgen.py ROLE CONFIG``) and its line protocol."""

    def __init__(
        self,
        procs: Processes,
        pinning: Pinning,
        name: str,
        role: str,
        config: object,
        program: Sequence[str] = (str(LOADGEN),),
    ) -> None:
        self.procs = procs
        self.name = name
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        text = json.dumps(config)
        self._config: IO[str] | None = None
        if len(text) > LONGEST_ARGUMENT:
            self._config = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed in stop()
                "w", prefix="bench-load-", suffix=".json", encoding="utf-8"
            )
            self._config.write(text)
            self._config.flush()
            text = "@" + self._config.name
        # ``program``: what runs under the interpreter (loadgen.py, or ``-m MODULE``).
        args = [*pinning.load(), sys.executable, *program, role, text]
        self.popen = procs.start(
            args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr
        )
        assert self.popen.stdout is not None
        self.stdout: IO[bytes] = self.popen.stdout
        self._buffer = b""
        self.ready = False
        self.eof = False
        self.progress: dict[str, Any] = {}
        self.result: dict[str, Any] | None = None
        self.error: str | None = None

    @property
    def busy(self) -> float:
        """CPU share of one core over the load process's measured window."""
        if self.result is None or not self.result["wall_s"]:
            return 0.0
        return float(self.result["cpu_s"]) / float(self.result["wall_s"])

    def send(self, command: str) -> None:
        stdin = self.popen.stdin
        if stdin is None or stdin.closed:
            return
        with contextlib.suppress(OSError):  # it already exited; pump() reports why
            stdin.write(command.encode() + b"\n")
            stdin.flush()

    def feed(self, data: bytes) -> None:
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            if not line.strip():
                continue
            try:
                message = json.loads(line)
            except ValueError:
                self.error = f"unexpected output: {line[:300]!r}"
                continue
            event = message.get("event")
            if event == "ready":
                self.ready = True
            elif event == "progress":
                self.progress = message
            elif event == "done":
                self.result = message["result"]
            elif event == "error":
                self.error = f"{message.get('error')}\n{message.get('traceback', '')}"

    def stderr_tail(self) -> str:
        try:
            self._stderr.seek(0)
            return self._stderr.read()[-2000:].decode(errors="replace")
        except (OSError, ValueError):
            return ""

    def stop(self) -> None:
        stdin = self.popen.stdin
        if stdin is not None and not stdin.closed:
            with contextlib.suppress(OSError):
                stdin.close()  # end of input: the process stops by itself
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(5.0)
        self.procs.stop(self.popen)
        self.stdout.close()
        self._stderr.close()
        if self._config is not None:
            self._config.close()  # and so deleted


def pump(
    workers: Sequence[Worker],
    until: Callable[[], bool],
    timeout: float,
    what: str,
    tick: Callable[[], None] = lambda: None,
) -> None:
    """Read the workers' output until ``until()``; raise on a worker error or at ``timeout``."""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        for worker in workers:
            if not worker.eof:
                selector.register(worker.stdout, selectors.EVENT_READ, worker)
        while True:
            for worker in workers:
                if worker.error:
                    raise BenchError(f"{worker.name} failed: {worker.error}")
                if worker.eof and worker.result is None:
                    raise BenchError(
                        f"{worker.name} exited ({worker.popen.poll()}) before finishing: "
                        f"{worker.stderr_tail()}"
                    )
            if until():
                return
            if time.monotonic() > deadline:
                raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}")
            for key, _ in selector.select(0.2):
                worker = cast(Worker, key.data)
                data = os.read(worker.stdout.fileno(), 65536)
                if data:
                    worker.feed(data)
                else:
                    worker.eof = True
                    selector.unregister(key.fileobj)
            tick()


class Progress:
    """One progress line on stderr: rewritten in place on a terminal, else every 2 s."""

    def __init__(self, stream: IO[str] = sys.stderr) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self._shown = 0.0
        self._width = 0

    def show(self, text: str) -> None:
        now = time.monotonic()
        if now - self._shown < (0.2 if self.tty else 2.0):
            return
        self._shown = now
        self._write(text, final=False)

    def done(self, text: str) -> None:
        self._shown = 0.0
        self._write(text, final=True)

    def _write(self, text: str, final: bool) -> None:
        if self.tty:
            self.stream.write("\r" + text.ljust(self._width) + ("\n" if final else ""))
            self._width = 0 if final else len(text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
