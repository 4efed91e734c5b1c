"""Starting queued runs in worker subprocesses, and noticing workers that died mid-run.

A launcher claims a run in the database (QUEUED → STARTING, with a token) before it starts a
worker, so two launchers (two daemons, or a daemon and `sensor tick`) never start the same run;
the worker confirms the claim before executing anything. A run is failed for a dead worker only
on evidence: its launcher saw its own child exit, or the worker's identity (node, pid, start time)
says it is gone on this node, or, elsewhere, its heartbeat is older than `heartbeat_timeout`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .identity import ProcessId, current, node_name, pid_alive
from .runs import IN_PROGRESS_STATUSES, RunRecord, RunStatus
from .storage import Storage

DEFAULT_MAX_CONCURRENT_RUNS = 4
DEFAULT_HEARTBEAT_TIMEOUT_S = 30.0
ENDED_KEPT = 1000  # ended runs remembered for a caller that never calls take_ended


@dataclass(frozen=True)
class DeadRun:
    run: RunRecord
    reason: str


class RunLauncher:
    """Keeps at most `max_concurrent_runs` runs in progress on this node, one worker process each.

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
    ) -> None:
        self.storage = storage
        self.home = home
        self.max_concurrent_runs = max(1, max_concurrent_runs)
        self.heartbeat_timeout = heartbeat_timeout
        self.database_url = database_url
        self.identity = str(current())
        # Every per-run structure below is bounded by the runs in progress, never by the runs
        # launched over the process's life (a daemon launches millions): entries go once used.
        self.children: dict[str, subprocess.Popen[bytes]] = {}
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
        self._ended: deque[str] = deque(maxlen=ENDED_KEPT)

    def launch_queued(self, run_ids: set[str] | None = None) -> list[str]:
        """Claim and start queued runs (oldest first, or only `run_ids`) while there is room."""
        self.reap()
        node = node_name()
        in_progress = self.storage.runs_with_status(IN_PROGRESS_STATUSES)
        mine = sum(1 for run in in_progress if _node_of(run.worker or run.launcher) in (node, None))
        self._keep_codes_of(in_progress)
        room = self.max_concurrent_runs - mine
        if room <= 0:
            return []
        started: list[str] = []
        for run, token in self.storage.claim_queued_runs(self.identity, room, run_ids):
            try:
                child = self._spawn(run.run_id, token)
            except OSError as exc:
                self.storage.set_run_status(
                    run, RunStatus.FAILURE, f"Could not start a run worker: {exc.strerror}."
                )
                continue
            self.children[run.run_id] = child
            # From here the run lives or dies with this process, not with the launcher (a
            # `sensor tick --no-wait` exits at once; a daemon may be stopped or killed).
            self.storage.record_worker(run.run_id, token, str(ProcessId.of(child.pid)))
            started.append(run.run_id)
        return started

    def _spawn(self, run_id: str, token: str) -> subprocess.Popen[bytes]:
        logs = self.home / "logs"
        logs.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(logs / f"{run_id}.log", os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o600)
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

    def reap(self) -> dict[str, int]:
        """Collect exit codes of finished children (so none linger as zombies)."""
        done = {}
        for run_id, child in list(self.children.items()):
            code = child.poll()
            if code is not None:
                done[run_id] = code
                del self.children[run_id]
                self._exit_codes[run_id] = code
                self._ended.append(run_id)
        return done

    def take_ended(self) -> list[str]:
        """Runs whose worker (a child of this launcher) has exited since the last call."""
        ended = list(self._ended)
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
            return _death_reason(run.worker_pid, code)
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
        run_ids: set[str],
        poll: float = 0.05,
        on_finish: Callable[[RunRecord], None] | None = None,
    ) -> list[RunRecord]:
        """Launch and wait until every run in `run_ids` has finished; returns them in order."""
        pending = set(run_ids)
        finished: list[RunRecord] = []
        while pending:
            self.launch_queued(pending)
            self.fail_dead_runs()
            for run_id in sorted(pending):
                run = self.storage.get_run(run_id)
                if run.is_finished:
                    pending.discard(run_id)
                    finished.append(run)
                    if on_finish:
                        on_finish(run)
            if pending:
                time.sleep(poll)
        return finished


def _node_of(identity: str | None) -> str | None:
    parsed = ProcessId.parse(identity)
    return parsed.node if parsed else None


def _death_reason(pid: int | None, code: int) -> str:
    who = f"Run worker (pid {pid})" if pid else "Run worker"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"{who} was killed by {name} before the run finished."
    return f"{who} exited with code {code} before the run finished."
