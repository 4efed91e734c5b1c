"""Warm run workers: processes forked from one that has loaded the project, each running claimed
runs one after another.

The daemon (and `sensor tick`) imported runsense and the project when it started; a run server
forked from it starts in about a millisecond instead of importing them again (~55 ms and more for
a big project), and it opens its database connection once, not once a run: on PostgreSQL a new
connection costs the server ~10 ms of CPU, more than the run. A server runs one run at a time,
so whatever a run does to its process (`os._exit`, a segfault, a hang stopped by a cancel) kills
that run only; its parent fails the run as it would a one-run worker's, and the next run gets a
fresh server. A server goes on to another run only after one that ended SUCCESS or FAILURE by its
own commit (no cancel can be on its way to it then) and ends after `runs_per_worker` runs, so
what user code leaves behind in a process does not outlive that many runs.

The child leaves the parent's session (Ctrl-C on the daemon's terminal does not reach it, and it
finishes its run when the daemon stops, as a cold worker does), takes back default signal
handlers, writes each run's output to that run's log file, and ends with `os._exit` when its
parent closes its command pipe (retired, or the parent is gone): it never returns into the
parent's code.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import io
import os
import signal
import stat
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from . import cancel, execution, parent_fds, run_output, tick_worker  # noqa: F401 - imported once
from .errors import RunsenseError, describe
from .forked import ForkedHelper
from .frames import read_frame, send_frame
from .identity import ProcessId
from .runs import RunRecord
from .storage import Storage, open_storage
from .worker import LoadedProject, Outcome, serve_warm

_HELD_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
_CRASHED = 70  # runsense itself failed in the child: the run in progress, if any, is failed


@dataclass(frozen=True)
class Claim:
    """A run the parent claimed for this server (parent → child)."""

    run: RunRecord  # as the claim left it (STARTING)
    token: str

    @property
    def run_id(self) -> str:
        return self.run.run_id


@dataclass(frozen=True)
class Done:
    """The server is done with its run (child → parent); `last`: it ends now."""

    run_id: str
    code: int
    last: bool
    final: RunRecord | None  # the run as the server last stored it, if it ran it


class RunServer(ForkedHelper):
    """The parent's handle on one run server."""

    def __init__(
        self,
        storage: Storage,
        home: Path,
        project: LoadedProject,
        database_url: str | None,
        runs_per_worker: int,
    ) -> None:
        self.project = project
        self.run_id: str | None = None  # the run it is running
        self.idle_since = time.monotonic()
        self.returncode: int | None = None  # its own exit code, once reaped
        self._code: int | None = None  # the code of the run it was given, once done
        self.final: RunRecord | None = None  # that run as it stored it last
        self._last = False
        ready_r, ready_w = os.pipe()

        def child(commands: int, reports: int) -> NoReturn:
            os.close(ready_r)
            _serve(storage, home, project, database_url, runs_per_worker,
                   commands, reports, ready_w)  # fmt: skip

        # A Ctrl-C or SIGTERM for the parent, arriving before the child has its own handlers,
        # must not run the parent's there: held back until then.
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, _HELD_SIGNALS)
        try:
            super().__init__(child)
        except BaseException:
            os.close(ready_r)
            os.close(ready_w)
            raise
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        os.close(ready_w)
        self._ready = ready_r
        parent_fds.keep_from_children(ready_r)
        self.identity = str(ProcessId.of(self.pid))  # the worker its runs record

    def settle(self) -> None:
        """Wait until the child holds its database locks (or died): only then may this process
        close its own connection (see `Storage.hold_in_fork`)."""
        if self._ready >= 0:
            with contextlib.suppress(OSError):
                os.read(self._ready, 1)  # a byte once it holds them, or EOF if it died first
            self._close(self._ready)
            self._ready = -1

    def assign(self, run: RunRecord, token: str) -> None:
        """Give it a claimed run (OSError if it is gone: the caller fails the run)."""
        self.run_id, self._code, self.final = run.run_id, None, None
        send_frame(self.commands, Claim(run, token))

    def poll(self) -> int | None:
        """The exit code of its run once it is done with it (negative: killed by that signal);
        the server's own exit code if it died running it. Then it is ready for another, unless
        `ended`."""
        if self._code is None and self.run_id is not None:
            for done in self.results.read():
                if isinstance(done, Done) and done.run_id == self.run_id:
                    self._code, self._last, self.final = done.code, done.last, done.final
            # Never waits: a run may close the pipe and go on; the pidfd wakes the caller.
            if self._code is None and self._reap():
                self._code = self.returncode
            if self._code is not None:
                self.idle_since = time.monotonic()
        return self._code

    @property
    def ended(self) -> bool:
        """It will run nothing more: it said so, it died, or it was retired."""
        return self._last or self.returncode is not None or self.commands < 0

    def done_with_run(self) -> None:
        self.run_id = None

    def reap(self) -> bool:
        """Whether it has exited (collecting it); then its descriptors are closed."""
        if not self._reap():
            return False
        self.close()
        if self._ready >= 0:
            self._close(self._ready)
            self._ready = -1
        return True

    def _reap(self) -> bool:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                pid, status = self.pid, 0  # reaped elsewhere: as Popen, say 0
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode is not None

    @staticmethod
    def _close(fd: int) -> None:
        parent_fds.forget(fd)
        os.close(fd)


# -- the child ----------------------------------------------------------------------------------


def _serve(
    parent_storage: Storage,
    home: Path,
    project: LoadedProject,
    database_url: str | None,
    runs_per_worker: int,
    commands: int,
    reports: int,
    ready: int,
) -> NoReturn:
    """The whole life of a run server."""
    code = _CRASHED
    claim: Claim | None = None
    try:
        parent_storage.hold_in_fork()  # first: the parent waits for it (it may close next)
        with contextlib.suppress(OSError):  # a parent killed meanwhile waits for nothing: go on
            os.write(ready, b"1")
        os.close(ready)
        _drop_inherited_sockets()
        # Objects inherited from the parent (its connections among them) are never collected
        # here: a finalizer closing an inherited database descriptor would drop this
        # process's SQLite locks.
        gc.freeze()
        os.setsid()
        _default_signals()
        _standard_streams()
        storage: Storage | None = None
        served = 0
        me = os.getpid()
        baseline = _process_state()
        while (claim := read_frame(commands)) is not None:
            if storage is None:
                try:
                    storage = open_storage(home, url=database_url, give_up_after=None)
                except RunsenseError as exc:
                    _to_run_log(home, claim.run_id, f"Error: {exc}")
                    _exit(2)
            outcome = _one_run(storage, home, project, claim)
            if os.getpid() != me:
                os._exit(0)  # a process the run forked came back here: it is not a server
            served += 1
            last = (
                not outcome.reusable
                or served >= runs_per_worker
                or _process_state() != baseline
                or not _pipes_intact(commands, reports)
            )
            done, claim = Done(claim.run_id, outcome.code, last, outcome.final), None
            try:
                send_frame(reports, done)
            except OSError:
                break  # the parent is gone: its successor watches the run through its record
            if last:
                break
        code = 0
    except BaseException as exc:
        if claim is not None:
            with contextlib.suppress(BaseException):  # one line, as everywhere; the run is
                _to_run_log(home, claim.run_id, f"Error: run worker failed: {describe(exc)}")
    _exit(code)


def _one_run(storage: Storage, home: Path, project: LoadedProject, claim: Claim) -> Outcome:
    """Run one claim with fds 1 and 2 (and Python's streams) on the run's log file."""
    _point(_high(os.open(run_output.log_path(home, claim.run_id), _LOG_FLAGS, 0o600)), 1, 2)
    streams = sys.stdout, sys.stderr
    try:
        return serve_warm(storage, claim.run, claim.token, project)
    finally:
        for stream in (sys.stdout, sys.stderr, *streams):
            with contextlib.suppress(Exception):
                stream.flush()
        sys.stdout, sys.stderr = streams  # the run's stamping writers (or its own) go
        _flush_c_streams()  # what C code buffered belongs to this run's log, not the next
        _to_null(1, 2)


_LOG_FLAGS = os.O_CREAT | os.O_WRONLY | os.O_APPEND


def _high(fd: int) -> int:
    """`fd` moved above 2: a run that closed 1 or 2 must not make the log take their number."""
    if fd > 2:
        return fd
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
    os.close(fd)
    return moved


def _point(fd: int, *targets: int) -> None:
    for target in targets:
        os.dup2(fd, target)
    os.close(fd)


def _process_state() -> tuple[object, ...]:
    """What a run can leave behind that would reach a later run: threads of its own, a timer
    (SIGALRM), signal handlers. Changed after a run, the server runs nothing more."""
    threads = sorted(
        t.name
        for t in threading.enumerate()
        if t is not threading.main_thread() and not t.name.startswith("runsense-")
    )
    handlers = []
    for signum in sorted(signal.valid_signals()):
        with contextlib.suppress(OSError, ValueError, RuntimeError):
            handlers.append((signum, signal.getsignal(signum)))
    return (tuple(threads), signal.getitimer(signal.ITIMER_REAL), tuple(handlers))


def _pipes_intact(*fds: int) -> bool:
    """The pipes to the parent are still what they were (a run may close or replace fds)."""
    try:
        return all(stat.S_ISFIFO(os.fstat(fd).st_mode) for fd in fds)
    except OSError:
        return False


def _flush_c_streams() -> None:
    libc = tick_worker.libc()
    if libc:
        with contextlib.suppress(Exception):
            libc.fflush(None)


def _to_run_log(home: Path, run_id: str, line: str) -> None:
    with open(
        run_output.log_path(home, run_id), "a", encoding="utf-8", errors="backslashreplace"
    ) as log:
        log.write(line + "\n")


def _exit(code: int) -> NoReturn:
    with contextlib.suppress(BaseException):
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


def _drop_inherited_sockets() -> None:
    """Let go of the parent's sockets (its database sessions above all), which a fork copies.
    A copy keeps the session open after the parent dies: a daemon killed inside a write
    transaction would hold PostgreSQL's write lock for as long as this process lives (tested).
    Each is replaced by /dev/null rather than closed, so its number is never reused by a
    connection of this process that the parent's connection object, if ever finalized here,
    would then close."""
    directory = "/proc/self/fd" if os.path.isdir("/proc/self/fd") else "/dev/fd"
    null = os.open(os.devnull, os.O_RDWR)
    try:
        for name in os.listdir(directory):
            fd = int(name)
            with contextlib.suppress(OSError):
                if fd != null and stat.S_ISSOCK(os.fstat(fd).st_mode):
                    os.dup2(null, fd, inheritable=False)
    finally:
        os.close(null)


def _default_signals() -> None:
    """A fresh interpreter's handlers, not the daemon's (which only set its stop flag)."""
    with contextlib.suppress(ValueError, OSError):
        signal.set_wakeup_fd(-1)
    for signum in signal.valid_signals():
        if signum in (signal.SIGKILL, signal.SIGSTOP):
            continue
        with contextlib.suppress(OSError, ValueError, RuntimeError):
            handler = signal.getsignal(signum)
            if callable(handler) and handler is not signal.default_int_handler:
                signal.signal(signum, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())


def _to_null(*fds: int) -> None:
    _point(_high(os.open(os.devnull, os.O_RDWR)), *fds)


def _standard_streams() -> None:
    """0, 1 and 2 on /dev/null between runs, and Python's streams new on them: the parent's may
    be a live view's proxy or a test's capture."""
    _to_null(0, 1, 2)
    sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False), encoding="utf-8")
    sys.stdout = io.TextIOWrapper(
        io.FileIO(1, "w", closefd=False), encoding="utf-8", errors="backslashreplace"
    )
    sys.stderr = io.TextIOWrapper(
        io.FileIO(2, "w", closefd=False),
        encoding="utf-8",
        errors="backslashreplace",
        line_buffering=True,
    )
    sys.__stdin__, sys.__stdout__, sys.__stderr__ = sys.stdin, sys.stdout, sys.stderr
