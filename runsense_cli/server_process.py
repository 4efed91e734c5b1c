"""What a run server does to its own process (`warm_worker`): standard streams and descriptors
on a run's log or /dev/null, default signal handlers, no socket of its parent, and a record of
what a run can leave behind in the process."""

from __future__ import annotations

import _signal
import contextlib
import fcntl
import io
import os
import signal
import stat
import sys
import threading

from . import tick_worker

LOG_FLAGS = os.O_CREAT | os.O_WRONLY | os.O_APPEND
_WATCHED_SIGNALS = sorted(int(signum) for signum in signal.valid_signals() - {signal.SIGTERM})


def high(fd: int) -> int:
    """`fd` moved above 2: a run that closed 1 or 2 must not make the log take their number."""
    if fd > 2:
        return fd
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
    os.close(fd)
    return moved


def point(fd: int, *targets: int) -> None:
    for target in targets:
        os.dup2(fd, target)
    os.close(fd)


def process_state() -> tuple[object, ...]:
    """What a run can leave behind that would reach a later run: threads of its own, a timer
    (SIGALRM), signal handlers. Changed after a run, the server runs nothing more. SIGTERM's is
    left out: a run's cancel handler holds it while the run ends, and puts back the one before."""
    threads = sorted(
        t.name
        for t in threading.enumerate()
        if t is not threading.main_thread() and not t.name.startswith("runsense-")
    )
    handlers = []
    for signum in _WATCHED_SIGNALS:
        with contextlib.suppress(OSError, ValueError, RuntimeError):
            handlers.append(_signal.getsignal(signum))  # no enum per signal: this runs per run
    return (tuple(threads), signal.getitimer(signal.ITIMER_REAL), tuple(handlers))


def pipes_intact(*fds: int) -> bool:
    """The pipes to the parent are still what they were (a run may close or replace fds)."""
    try:
        return all(stat.S_ISFIFO(os.fstat(fd).st_mode) for fd in fds)
    except OSError:
        return False


def flush_c_streams() -> None:
    libc = tick_worker.libc()
    if libc:
        with contextlib.suppress(Exception):
            libc.fflush(None)


def drop_inherited_sockets() -> None:
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


def default_signals() -> None:
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


def to_null(*fds: int) -> None:
    point(high(os.open(os.devnull, os.O_RDWR)), *fds)


def standard_streams() -> None:
    """0, 1 and 2 on /dev/null between runs, and Python's streams new on them: the parent's may
    be a live view's proxy or a test's capture."""
    to_null(0, 1, 2)
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
