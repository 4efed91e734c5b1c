"""Starting queued runs in worker subprocesses, and noticing workers that died mid-run.

A launcher claims a run in the database (QUEUED → STARTING, with a token) before it starts a
worker, so two launchers (two daemons, or a daemon and `sensor tick`) never start the same run;
the worker confirms the claim before executing anything. A launcher that lives in a process
that has loaded the project (the daemon, `sensor tick`) hands its runs to run servers forked
from itself (warm: nothing to import again, one database connection for many runs, see
`warm_worker`); a daemon's servers then take their next runs themselves. Others, or any with
RUNSENSE_COLD_WORKERS=1, start `python -m runsense_cli _worker` for each run. Whoever waits on
`fds()` wakes the moment a worker is done with a run. A run is failed for a dead worker only
on evidence: its launcher saw its own child exit, or the worker's identity (node, pid, start time)
says it is gone on this node, or, elsewhere, its heartbeat is older than `heartbeat_timeout`.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from .identity import ProcessId, current, node_name, node_of, pid_alive
from .run_output import log_path
from .runs import IN_PROGRESS_STATUSES, RunRecord, RunStatus
from .storage import Storage
from .warm_worker import RunServer, TakeGate, TakeRule
from .worker import LoadedProject, death_reason

DEFAULT_MAX_CONCURRENT_RUNS = 4
DEFAULT_HEARTBEAT_TIMEOUT_S = 30.0
DEFAULT_RUNS_PER_WORKER = 100
SERVER_IDLE_S = 10.0  # a run server with nothing to run this long ends
ENDED_KEPT = 1000  # ended runs remembered for a caller that never calls take_ended


class WorkerProcess(Protocol):
    """A run's worker as the launcher sees it: a `Popen` (cold) or a `RunServer` (warm)."""

    pid: int

    def poll(self) -> int | None:
        """The exit code of the run's worker once it is done with the run."""


def cold_workers_only() -> bool:
    """RUNSENSE_COLD_WORKERS=1: always start a fresh interpreter (to compare, or to debug)."""
    return os.environ.get("RUNSENSE_COLD_WORKERS", "") not in ("", "0")


@dataclass(frozen=True)
class DeadRun:
    run: RunRecord
    reason: str


class RunLauncher:
    """Keeps at most `max_concurrent_runs` runs in progress on this node, each in a worker process
    running only it (a run server runs the next one only once it is done with this one).

    Workers run in their own session, so Ctrl-C on the daemon's terminal does not reach them and
    they outlive a daemon that stops; the next launcher watches them through their identity.
    """

    def __init__(
        self,
        storage: Storage,
        home: Path,
        max_concurrent_runs: int = DEFAULT_MAX_CONCURRENT_RUNS,
        *,
        heartbeat_timeout: float = DEFAULT_HEARTBEAT_TIMEOUT_S,
        database_url: str | None = None,
        project: LoadedProject | None = None,
        runs_per_worker: int = DEFAULT_RUNS_PER_WORKER,
    ) -> None:
        self.storage = storage
        self.home = home
        self.max_concurrent_runs = max(1, max_concurrent_runs)
        self.heartbeat_timeout = heartbeat_timeout
        self.database_url = database_url
        self.identity = str(current())
        # The project this process has loaded (the daemon replaces it on every reload): runs of
        # it are forked from here; without one, every worker is a fresh interpreter.
        self.project = project
        self.runs_per_worker = max(1, runs_per_worker)
        # A daemon's run servers take their next queued run themselves, in the commit that ends
        # the one before (`Storage.claim_next_run`); a launcher waiting for given runs only
        # (`sensor tick`) hands each run out itself.
        self.servers_take_runs = False
        self._taken: list[str] = []  # runs its servers took since the last `take_taken`
        self.gate = TakeGate()
        self._idle: list[RunServer] = []  # run servers waiting for a run, newest last
        self._ending: list[RunServer] = []  # retired or ended, not yet reaped
        # Every per-run structure below is bounded by the runs in progress, never by the runs
        # launched over the process's life (a daemon launches millions): entries go once used.
        self.children: dict[str, WorkerProcess] = {}
        self._pidfds: dict[str, int] = {}  # readable once the child has ended (Linux 5.3+)
        # Exit codes of reaped children, kept only while their run is in progress in storage
        # (a worker that died mid-run): fail_dead_runs uses them, launch_queued drops the rest.
        self._exit_codes: dict[str, int] = {}
        # Remote runs: the heartbeat last seen and when it was first seen (this process's
        # clock), so a run is failed only after its beat stood still for a whole timeout while
        # this launcher was watching, never because the database was away for a while.
        self._beats: dict[str, tuple[float | None, float]] = {}
        self._generation = storage.connection_generation
        # Runs whose worker child exited since the last `take_ended` (for the daemon's log); a
        # caller that never asks (`sensor tick` waiting for its runs) keeps only the newest.
        self._ended: deque[tuple[str, RunRecord | None]] = deque(maxlen=ENDED_KEPT)

    def launch_queued(self, run_ids: set[str] | None = None) -> list[str]:
        """Claim and start queued runs (oldest first, or only `run_ids`) while there is room."""
        self.reap()
        if len(self.children) >= self.max_concurrent_runs:
            return []  # full, whatever else runs on this node: no need to look
        in_progress = self.storage.runs_with_status(IN_PROGRESS_STATUSES)
        room = self.max_concurrent_runs - self._on_this_node(in_progress)
        self._keep_codes_of(in_progress)
        if room <= 0:
            return []
        # Idle run servers are named as their runs' workers in the claim itself; a run beyond
        # them gets a new process, named right after it starts. Either way, from then on the
        # run lives or dies with that process, not with the launcher (a `sensor tick --no-wait`
        # exits at once; a daemon may be stopped or killed).
        ready = self._idle_servers(room) if self._warm_project() else []
        started: list[str] = []
        take = self._take_rule(run_ids)
        try:
            try:
                claimed = self.storage.claim_queued_runs(
                    self.identity, room, run_ids, workers=[server.identity for server in ready]
                )
            except BaseException:
                self._idle += ready
                raise
            for index, (run, token) in enumerate(claimed):
                named = ready[index] if index < len(ready) else None
                try:
                    child = self._spawn(run, token, take) if named is None else named
                    if named is not None:
                        named.assign(run, token, take)
                except OSError as exc:
                    if named is not None:
                        self._end(named)
                    self.storage.set_run_status(
                        run, RunStatus.FAILURE, f"Could not start a run worker: {exc.strerror}."
                    )
                    continue
                self.children[run.run_id] = child
                started.append(run.run_id)
                if isinstance(child, subprocess.Popen):
                    with contextlib.suppress(AttributeError, OSError):
                        self._pidfds[run.run_id] = os.pidfd_open(child.pid)
                if named is None:
                    self.storage.record_worker(run.run_id, token, str(ProcessId.of(child.pid)))
            self._idle += ready[len(claimed) :]  # not needed this time
        finally:
            for child in self.children.values():
                if isinstance(child, RunServer):
                    child.settle()  # it holds its database locks from here on (no-op after)
        return started

    def use_project(self, project: LoadedProject) -> None:
        """Serve runs from `project` from now on (a reload): busy servers of the code before
        take no more runs and end after the one they have."""
        self.project = project
        for child in self.children.values():
            if isinstance(child, RunServer) and child.project is not project:
                child.retire()

    def _on_this_node(self, in_progress: list[RunRecord]) -> int:
        """The runs in progress on this node, whoever started them; its servers may take their
        next runs while that is within `max_concurrent_runs` (each frees its slot as it takes)."""
        node = node_name()
        count = sum(1 for run in in_progress if node_of(run.worker or run.launcher) in (node, None))
        self.gate.set(count <= self.max_concurrent_runs)
        return count

    def _take_rule(self, run_ids: set[str] | None) -> TakeRule | None:
        if not self.servers_take_runs or run_ids is not None:
            return None
        return TakeRule(self.identity)

    def _warm_project(self) -> LoadedProject | None:
        """The loaded project runs are served from, or None: each run gets a cold worker."""
        if hasattr(os, "fork") and not cold_workers_only():
            return self.project
        return None

    def _idle_servers(self, wanted: int) -> list[RunServer]:
        """Up to `wanted` idle run servers, taken from the pool (the most recently used first);
        one that has died meanwhile is collected, not handed out."""
        taken: list[RunServer] = []
        while self._idle and len(taken) < wanted:
            server = self._idle.pop()
            if server.reap():
                continue
            taken.append(server)
        return taken

    def _spawn(self, run: RunRecord, token: str, take: TakeRule | None) -> WorkerProcess:
        run_id = run.run_id
        log = log_path(self.home, run_id)
        log.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        project = self._warm_project()
        if project is not None:
            server = RunServer(
                self.storage, self.home, project, self.database_url, self.runs_per_worker, self.gate
            )
            try:
                server.assign(run, token, take)
            except OSError:
                self._end(server)
                raise
            return server
        fd = os.open(log, os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o600)
        env = dict(os.environ)
        if self.database_url:
            env["RUNSENSE_DATABASE_URL"] = self.database_url  # never on the command line: ps
        try:
            return subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "runsense_cli",
                    "_worker",
                    run_id,
                    "--home",
                    str(self.home),
                    "--claim",
                    token,
                ],
                stdin=subprocess.DEVNULL,
                stdout=fd,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=env,
            )
        finally:
            os.close(fd)

    def _end(self, server: RunServer) -> None:
        server.retire()
        if not server.reap():
            self._ending.append(server)

    def reap(self) -> dict[str, int]:
        """Collect the exit codes of runs whose worker is done with them (so no child lingers
        as a zombie), and end run servers that are idle too long or of replaced code."""
        done = {}
        for run_id, child in list(self.children.items()):
            # A run server that took its next runs may have ended several since the last look.
            while (code := child.poll()) is not None:
                done[run_id] = code
                del self.children[run_id]
                pidfd = self._pidfds.pop(run_id, None)
                if pidfd is not None:
                    os.close(pidfd)
                self._exit_codes[run_id] = code
                self._ended.append((run_id, getattr(child, "final", None)))
                if not isinstance(child, RunServer) or not self._server_done(child):
                    break
                run_id = child.run_id or ""
        now = time.monotonic()
        for server in list(self._idle):
            if server.project is not self.project or now - server.idle_since > SERVER_IDLE_S:
                self._idle.remove(server)
                self._end(server)
        self._ending = [server for server in self._ending if not server.reap()]
        return done

    def _server_done(self, server: RunServer) -> bool:
        """A run server is done with its run: it runs the one it took already (True), waits for
        another (idle), or ends (it said so, or its project was replaced)."""
        taken = server.next
        if taken is None:
            server.done_with_run()
            if server.ended or server.project is not self.project:
                self._end(server)
            else:
                self._idle.append(server)
            return False
        server.go_on_with(taken)  # (after a reload, `use_project` has retired it already)
        self.children[taken.run_id] = server
        self._taken.append(taken.run_id)
        return True

    def close(self) -> None:
        """Idle run servers end now; busy ones once their run is done."""
        for child in self.children.values():
            if isinstance(child, RunServer):
                child.retire()
        for server in self._idle:
            self._end(server)
        self._idle.clear()

    def fds(self) -> list[int]:
        """Descriptors that become readable when a worker is done with its run (to wait on
        with others)."""
        fds = list(self._pidfds.values())
        for child in self.children.values():
            if isinstance(child, RunServer):
                fds += child.fds()
        return fds

    def take_taken(self) -> list[str]:
        """Runs this launcher's servers took themselves since the last call (for the log)."""
        taken, self._taken = self._taken, []
        return taken

    def take_ended(self) -> dict[str, RunRecord | None]:
        """Runs whose worker (a child of this launcher) is done with them since the last call,
        each as its worker last stored it, if it said (a run server does)."""
        ended = dict(self._ended)
        self._ended.clear()
        return ended

    def _keep_codes_of(self, in_progress: list[RunRecord]) -> None:
        """Drop the exit codes of runs that finished: only a run still in progress needs one.
        Called after `reap`, so a worker's terminal status (committed before it exits) shows."""
        live = {run.run_id for run in in_progress}
        for run_id in [r for r in self._exit_codes if r not in live]:
            del self._exit_codes[run_id]

    def fail_dead_runs(self) -> list[DeadRun]:
        """Mark FAILURE every in-progress run whose worker is gone, once (compare-and-set)."""
        self.reap()
        dead: list[DeadRun] = []
        in_progress = self.storage.runs_with_status(IN_PROGRESS_STATUSES)
        self._on_this_node(in_progress)
        if self.storage.connection_generation != self._generation:
            self._beats.clear()  # beats missed while the database was away prove nothing
            self._generation = self.storage.connection_generation
        watching = {run.run_id for run in in_progress}
        self._beats = {k: v for k, v in self._beats.items() if k in watching}
        for run in in_progress:
            if run.run_id in self.children:
                continue
            reason = self._why_dead(run)
            if reason is None:
                continue
            if run.status == RunStatus.CANCELING:
                # A cancelled run whose worker is gone (SIGKILL after the grace) ends CANCELED.
                failed = self.storage.set_run_status(
                    run, RunStatus.CANCELED, f"Run canceled. {reason}", only_from=[run.status]
                )
            else:
                failed = self.storage.set_run_status(
                    run,
                    RunStatus.FAILURE,
                    f'Execution of run for "{run.job_name}" failed. {reason}',
                    only_from=IN_PROGRESS_STATUSES,
                )
            if failed is not None:
                dead.append(DeadRun(failed, reason))
        self._exit_codes.clear()  # the rest belong to runs that finished properly
        return dead

    def _why_dead(self, run: RunRecord) -> str | None:
        code = self._exit_codes.pop(run.run_id, None)
        if code is not None:
            return death_reason(run.worker_pid, code)
        worker = ProcessId.parse(run.worker)
        if worker is not None:
            alive = worker.alive()
            if alive is False:
                return f"Run worker (pid {worker.pid}) is gone and the run never finished."
            if alive is None and self._stale(run):
                return (
                    f"Run worker (pid {worker.pid} on {worker.node}) sent no heartbeat for over"
                    f" {self.heartbeat_timeout:g} s."
                )
            return None
        if run.worker_pid is not None and run.launcher is None:
            # A row from before workers had identities: the pid is all there is.
            if pid_alive(run.worker_pid):
                return None
            return f"Run worker (pid {run.worker_pid}) is gone and the run never finished."
        launcher = ProcessId.parse(run.launcher)
        if launcher is None:
            return None
        if str(launcher) == self.identity:
            # Claimed here, yet no child of ours runs it: the claim's commit answer was lost, so
            # no worker was ever started for it.
            return "It was claimed, but no run worker was started for it."
        alive = launcher.alive()
        if alive is False:
            return f"Its launcher (pid {launcher.pid}) died before a run worker started."
        if alive is None and self._stale(run):
            return (
                f"Its launcher on {launcher.node} started no run worker within"
                f" {self.heartbeat_timeout:g} s."
            )
        return None

    def _stale(self, run: RunRecord) -> bool:
        seen = self._beats.get(run.run_id)
        if seen is None or seen[0] != run.heartbeat_at:
            self._beats[run.run_id] = (run.heartbeat_at, time.monotonic())
            return False
        return time.monotonic() - seen[1] > self.heartbeat_timeout

    def wait_for(
        self,
        run_ids: Iterable[str],
        poll: float = 0.5,
        on_finish: Callable[[RunRecord], None] | None = None,
    ) -> int:
        """Launch and wait until every run in `run_ids` has finished; returns how many.

        `run_ids` is consumed lazily and at most a few times `max_concurrent_runs` are watched at
        once, so waiting for 10^6 requested runs holds no more than waiting for ten. Between
        looks it sleeps until a run's status changes (whoever runs it), a child of its own ends,
        or `poll` seconds pass, the backstop for a missed wake-up."""
        source = iter(run_ids)
        window = max(16, 4 * self.max_concurrent_runs)
        pending: dict[str, None] = {}  # in the order given
        done = 0
        more = True
        while more or pending:
            while more and len(pending) < window:
                run_id = next(source, None)
                if run_id is None:
                    more = False
                else:
                    pending[run_id] = None
            self.launch_queued(set(pending))
            self.fail_dead_runs()
            before = done
            for run_id in list(pending):
                run = self.storage.get_run(run_id)
                if run.is_finished:
                    del pending[run_id]
                    done += 1
                    if on_finish:
                        on_finish(run)
            if pending and done == before:
                self.storage.wait_for_change(poll, also=self.fds())
        return done
