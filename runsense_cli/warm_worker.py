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
import dataclasses
import gc
import mmap
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from . import cancel, execution, parent_fds, run_output, tick_worker  # noqa: F401 - imported once
from . import server_process as process
from .errors import RunsenseError, describe
from .forked import ForkedHelper
from .frames import read_frame, send_frame
from .identity import ProcessId
from .runs import RunRecord, RunStatus
from .storage import Storage, open_storage
from .storage.wake import readable
from .worker import LoadedProject, Outcome, serve_warm

_HELD_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
_CRASHED = 70  # runsense itself failed in the child: the run in progress, if any, is failed


@dataclass(frozen=True)
class TakeRule:
    """The parent lets the server take its next runs itself (`Storage.claim_next_run`), for
    `launcher`, while the parent's `TakeGate` is open."""

    launcher: str


class TakeGate:
    """One byte of memory a launcher shares with the run servers it forks: open while its node
    has room for the runs they take (`max_concurrent_runs` counts every run on the node,
    whoever started it). The launcher sets it from the runs in progress it reads; a server
    looks at it before it takes a run, for free."""

    def __init__(self) -> None:
        self._byte = mmap.mmap(-1, 1)  # anonymous and shared: forked children see every change
        self._byte[0] = 1

    def set(self, is_open: bool) -> None:
        self._byte[0] = 1 if is_open else 0

    @property
    def is_open(self) -> bool:
        return self._byte[0] == 1


@dataclass(frozen=True)
class Claim:
    """A run the server is to run: claimed by the parent (parent → child), or taken by the
    server itself in the commit that ended its previous run (reported in `Done.next`)."""

    run: RunRecord  # as the claim left it (STARTING), or STARTED if `started`
    token: str  # the parent's claim token ("" when taken: registered already)
    take: TakeRule | None = None
    taken: bool = False
    started: bool = False
    origin: dict[str, Any] | None = None  # known when taken

    @property
    def run_id(self) -> str:
        return self.run.run_id


@dataclass(frozen=True)
class Done:
    """The server is done with its run (child → parent); `last`: it ends now; `next`: the run
    it took in the commit that ended this one, which it runs now."""

    run_id: str
    code: int
    last: bool
    final: RunRecord | None  # the run as the server last stored it, if it ran it
    next: Claim | None = None


class RunServer(ForkedHelper):
    """The parent's handle on one run server."""

    def __init__(
        self,
        storage: Storage,
        home: Path,
        project: LoadedProject,
        database_url: str | None,
        runs_per_worker: int,
        gate: TakeGate | None = None,
    ) -> None:
        self.project = project
        self.run_id: str | None = None  # the run it is running
        self.idle_since = time.monotonic()
        self.returncode: int | None = None  # its own exit code, once reaped
        self._code: int | None = None  # the code of the run it was given, once done
        self.final: RunRecord | None = None  # that run as it stored it last
        self.next: Claim | None = None  # the run it took itself when that one ended
        self._unread: deque[Done] = deque()
        self._last = False
        ready_r, ready_w = os.pipe()

        def child(commands: int, reports: int) -> NoReturn:
            os.close(ready_r)
            _serve(storage, home, project, database_url, runs_per_worker,
                   commands, reports, ready_w, gate)  # fmt: skip

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

    def assign(self, run: RunRecord, token: str, take: TakeRule | None = None) -> None:
        """Give it a claimed run (OSError if it is gone: the caller fails the run); with
        `take`, it takes its next runs itself for as long as it may."""
        self.run_id, self._code, self.final, self.next = run.run_id, None, None, None
        send_frame(self.commands, Claim(run, token, take))

    def go_on_with(self, claim: Claim) -> None:
        """It runs `claim`, which it took itself (its `next`), from now on."""
        self.run_id, self._code, self.final, self.next = claim.run_id, None, None, None

    def poll(self) -> int | None:
        """The exit code of its run once it is done with it (negative: killed by that signal);
        the server's own exit code if it died running it. Then it is ready for another, unless
        `ended`."""
        if self._code is None and self.run_id is not None:
            # One read may bring the ends of several runs (each taking the next): kept in order,
            # one given out per call.
            self._unread.extend(done for done in self.results.read() if isinstance(done, Done))
            while self._unread and self._code is None:
                done = self._unread.popleft()
                if done.run_id == self.run_id:
                    self._code, self._last, self.final = done.code, done.last, done.final
                    self.next = done.next
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
    gate: TakeGate | None,
) -> NoReturn:
    """The whole life of a run server."""
    code = _CRASHED
    claim: Claim | None = None
    try:
        parent_storage.hold_in_fork()  # first: the parent waits for it (it may close next)
        with contextlib.suppress(OSError):  # a parent killed meanwhile waits for nothing: go on
            os.write(ready, b"1")
        os.close(ready)
        process.drop_inherited_sockets()
        # Objects inherited from the parent (its connections among them) are never collected
        # here: a finalizer closing an inherited database descriptor would drop this
        # process's SQLite locks.
        gc.freeze()
        os.setsid()
        process.default_signals()
        process.standard_streams()
        storage: Storage | None = None
        served = 0
        me = os.getpid()
        baseline = process.process_state()
        claim = read_frame(commands)
        while claim is not None:
            if storage is None:
                try:
                    storage = open_storage(home, url=database_url, give_up_after=None)
                except RunsenseError as exc:
                    _to_run_log(home, claim.run_id, f"Error: {exc}")
                    _exit(2)

            def clean(served: int = served) -> bool:
                """Nothing of the runs so far can reach the next (see the module's doc)."""
                return (
                    served + 1 < runs_per_worker
                    and process.process_state() == baseline
                    and process.pipes_intact(commands, reports)
                )

            take = _taker(storage, project, claim, commands, clean, gate)
            outcome = _one_run(storage, home, project, claim, take)
            if os.getpid() != me:
                os._exit(0)  # a process the run forked came back here: it is not a server
            served += 1
            taken = outcome.next
            last = taken is None and (
                not outcome.reusable
                or served >= runs_per_worker
                or process.process_state() != baseline
                or not process.pipes_intact(commands, reports)
            )
            done, claim = Done(claim.run_id, outcome.code, last, outcome.final, taken), None
            try:
                send_frame(reports, done)
            except OSError:
                # The parent is gone: its successor watches the runs through their records. A
                # run taken already is still this process's to run; then it ends.
                if taken is None:
                    break
                taken = dataclasses.replace(taken, take=None)
            if taken is not None:
                claim = taken
            elif last:
                break
            else:
                claim = read_frame(commands)
        code = 0
    except BaseException as exc:
        if claim is not None:
            with contextlib.suppress(BaseException):  # one line, as everywhere; the run is
                _to_run_log(home, claim.run_id, f"Error: run worker failed: {describe(exc)}")
    _exit(code)


def _taker(
    storage: Storage,
    project: LoadedProject,
    claim: Claim,
    commands: int,
    clean: Callable[[], bool],
    gate: TakeGate | None,
) -> Callable[[RunRecord], Claim | None] | None:
    """What takes the next run inside the commit that ends this one (`execute_run`'s
    `after_end`), when the parent allows it; the run it takes is also started there if its
    job is in the loaded project."""
    rule = claim.take
    if rule is None or gate is None:
        return None
    worker = str(ProcessId.of(os.getpid()))

    def take(ended: RunRecord) -> Claim | None:
        # Retired (the parent closed its end: a new project, or it stops), the node full, or
        # not clean: no more.
        if not gate.is_open or readable([commands], 0) or not clean():
            return None
        taken = storage.claim_next_run(
            rule.launcher,
            worker,
            ended.run_id,
            origin=project.origin,
            jobs=list(project.definitions.jobs),
        )
        if taken is None:
            return None
        run, origin = taken
        started = run.status == RunStatus.STARTED  # a job of the loaded project: started there
        if started:
            execution.first_step_started(storage, project.definitions.get_job(run.job_name), run)
        return Claim(run, "", rule, True, started, origin)

    return take


def _one_run(
    storage: Storage,
    home: Path,
    project: LoadedProject,
    claim: Claim,
    take: Callable[[RunRecord], Claim | None] | None,
) -> Outcome:
    """Run one claim with fds 1 and 2 (and Python's streams) on the run's log file."""
    process.point(
        process.high(os.open(run_output.log_path(home, claim.run_id), process.LOG_FLAGS, 0o600)),
        1,
        2,
    )
    streams = sys.stdout, sys.stderr
    try:
        return serve_warm(
            storage,
            claim.run,
            claim.token,
            project,
            taken=claim.taken,
            started=claim.started,
            origin=claim.origin,
            after_end=take,
        )
    finally:
        for stream in (sys.stdout, sys.stderr, *streams):
            with contextlib.suppress(Exception):
                stream.flush()
        sys.stdout, sys.stderr = streams  # the run's stamping writers (or its own) go
        process.flush_c_streams()  # what C code buffered belongs to this run's log, not the next
        process.to_null(1, 2)


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
