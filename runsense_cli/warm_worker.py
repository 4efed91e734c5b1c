"""Warm run workers: a run's worker forked from a process that has loaded the project already.

The daemon (and `sensor tick`) imported runsense and the project when it started; a worker forked
from it starts in about a millisecond instead of importing them again (~55 ms and more for a big
project). The child leaves the parent's session (Ctrl-C on the daemon's terminal does not reach
it, and it outlives a stopped daemon like a cold worker), takes back default signal handlers and
fresh standard streams on the run's log file, opens a database connection of its own (the
parent's is never touched), runs the claim as a cold worker does and ends with `os._exit`: it
never returns into the parent's code.
"""

from __future__ import annotations

import contextlib
import gc
import io
import os
import signal
import sys
from pathlib import Path
from typing import NoReturn

from . import cancel, execution, run_output  # noqa: F401 - imported once here, not per child
from .errors import RunsenseError, describe
from .storage import Storage, open_storage
from .worker import LoadedProject, run_claimed

_HELD_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
_CRASHED = 70  # runsense itself failed in the child before the run could be executed


class ForkedWorker:
    """The parent's handle on a forked worker, with the part of `Popen` the launcher uses."""

    def __init__(self, pid: int, ready: int = -1) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._ready = ready

    def settle(self) -> None:
        """Wait until the child holds its database locks (or died): only then may this process
        close its own connection (see `Storage.hold_in_fork`)."""
        if self._ready >= 0:
            with contextlib.suppress(OSError):
                os.read(self._ready, 1)  # a byte once it holds them, or EOF if it died first
            os.close(self._ready)
            self._ready = -1

    def poll(self) -> int | None:
        """The exit code once it has ended (reaping it), negative for a signal; else None."""
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                pid, status = self.pid, 0  # reaped elsewhere: as Popen, say 0
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode


def fork_worker(
    storage: Storage,
    log: Path,
    run_id: str,
    token: str,
    project: LoadedProject,
    home: Path,
    database_url: str | None,
) -> ForkedWorker:
    """Start the worker of one claimed run (OSError if it cannot be). Call `settle()` on it
    before this process may close its database; meanwhile the child starts on another core."""
    fd = os.open(log, os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o600)
    try:
        ready_r, ready_w = os.pipe()
    except OSError:
        os.close(fd)
        raise
    try:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        # A Ctrl-C or SIGTERM for the parent, arriving before the child has its own handlers,
        # must not run the parent's there: held back until then.
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, _HELD_SIGNALS)
        try:
            pid = os.fork()
            if pid == 0:
                os.close(ready_r)
                _child(storage, fd, ready_w, run_id, token, project, home, database_url)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        os.close(ready_w)
        ready_w = -1
        worker = ForkedWorker(pid, ready_r)
        ready_r = -1
        return worker
    finally:
        for one in (fd, ready_r, ready_w):
            if one >= 0:
                os.close(one)


def _child(
    parent_storage: Storage,
    log_fd: int,
    ready: int,
    run_id: str,
    token: str,
    project: LoadedProject,
    home: Path,
    database_url: str | None,
) -> NoReturn:
    """The whole life of a forked worker."""
    code = _CRASHED
    try:
        parent_storage.hold_in_fork()  # first: the parent waits for it (it may close next)
        with contextlib.suppress(OSError):  # a parent killed meanwhile waits for nothing: go on
            os.write(ready, b"1")
        os.close(ready)
        # Objects inherited from the parent (its connections among them) are never collected
        # here: a finalizer closing an inherited database descriptor would drop this
        # process's SQLite locks.
        gc.freeze()
        os.setsid()
        _default_signals()
        _standard_streams(log_fd)
        try:
            storage = open_storage(home, url=database_url, give_up_after=None)
        except RunsenseError as exc:
            print(f"Error: {exc}", file=sys.stderr)
            code = 2
        else:
            code = run_claimed(storage, run_id, token, project)
            storage.close()
    except BaseException as exc:
        with contextlib.suppress(BaseException):  # one line, as everywhere; the run is failed
            print(f"Error: run worker failed: {describe(exc)}", file=sys.stderr)  # as a dead one
    finally:
        with contextlib.suppress(BaseException):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


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


def _standard_streams(log_fd: int) -> None:
    """0 from /dev/null, 1 and 2 to the run's log file, and Python's streams new on them: the
    parent's may be a live view's proxy or a test's capture."""
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
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
