"""Starting queued runs in worker subprocesses, and noticing workers that died mid-run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .processes import pid_alive
from .runs import IN_PROGRESS_STATUSES, RunRecord, RunStatus
from .storage import Storage

DEFAULT_MAX_CONCURRENT_RUNS = 4


@dataclass(frozen=True)
class DeadRun:
    run: RunRecord
    reason: str


class RunLauncher:
    """Keeps at most `max_concurrent_runs` runs in progress, each in its own worker process.

    Workers run in their own session, so Ctrl-C on the daemon's terminal does not reach them and
    they outlive a daemon that stops; the next launcher adopts them through their recorded pid.
    """

    def __init__(
        self,
        storage: Storage,
        home: Path,
        max_concurrent_runs: int = DEFAULT_MAX_CONCURRENT_RUNS,
    ) -> None:
        self.storage = storage
        self.home = home
        self.max_concurrent_runs = max(1, max_concurrent_runs)
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        # Exit codes of reaped children, kept until fail_dead_runs has looked at their runs.
        self._exit_codes: dict[str, int] = {}

    def launch_queued(self, run_ids: set[str] | None = None) -> list[str]:
        """Start queued runs (oldest first, or only `run_ids`) while there is room."""
        self.reap()
        in_progress = len(self.storage.runs_with_status(IN_PROGRESS_STATUSES))
        unclaimed = sum(1 for run_id in self.children if self._still_queued(run_id))
        room = self.max_concurrent_runs - in_progress - unclaimed
        started: list[str] = []
        if room <= 0:
            return started
        for run in self.storage.runs_with_status(
            [RunStatus.QUEUED],
            # Only some runs wanted (a `sensor tick` waiting on its own): older queued runs must
            # not use up the query, or the wanted ones would never start.
            limit=None if run_ids is not None else room + len(self.children),
        ):
            if len(started) >= room:
                break
            if run.run_id in self.children or (run_ids is not None and run.run_id not in run_ids):
                continue
            self.children[run.run_id] = self._spawn(run.run_id)
            started.append(run.run_id)
        return started

    def _spawn(self, run_id: str) -> subprocess.Popen[bytes]:
        logs = self.home / "logs"
        logs.mkdir(mode=0o700, exist_ok=True)
        fd = os.open(logs / f"{run_id}.log", os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o600)
        try:
            return subprocess.Popen(
                [sys.executable, "-m", "runsense_cli", "_worker", run_id, "--home", str(self.home)],
                stdin=subprocess.DEVNULL,
                stdout=fd,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            os.close(fd)

    def _still_queued(self, run_id: str) -> bool:
        try:
            return self.storage.get_run(run_id).status == RunStatus.QUEUED
        except Exception:
            return False

    def reap(self) -> dict[str, int]:
        """Collect exit codes of finished children (so none linger as zombies)."""
        done = {}
        for run_id, child in list(self.children.items()):
            code = child.poll()
            if code is not None:
                done[run_id] = code
                del self.children[run_id]
                self._exit_codes[run_id] = code
        return done

    def fail_dead_runs(self) -> list[DeadRun]:
        """Mark FAILURE every in-progress run whose worker process is gone."""
        self.reap()
        dead: list[DeadRun] = []
        for run in self.storage.runs_with_status(IN_PROGRESS_STATUSES):
            if run.run_id in self.children or run.worker_pid is None:
                continue
            code = self._exit_codes.pop(run.run_id, None)
            if code is None and pid_alive(run.worker_pid):
                continue
            reason = _death_reason(run.worker_pid, code)
            # Re-read: the worker may have finished the run just before it exited.
            current = self.storage.get_run(run.run_id)
            if current.status not in IN_PROGRESS_STATUSES:
                continue
            self.storage.set_run_status(
                current,
                RunStatus.FAILURE,
                f'Execution of run for "{run.job_name}" failed. {reason}',
            )
            dead.append(DeadRun(current, reason))
        return dead

    def running_count(self) -> int:
        self.reap()
        return len(self.children)

    def wait_for(self, run_ids: set[str], poll: float = 0.05, on_finish=None) -> list[RunRecord]:
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


def _death_reason(pid: int, code: int | None) -> str:
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"Run worker (pid {pid}) was killed by {name} before the run finished."
    if code is not None:
        return f"Run worker (pid {pid}) exited with code {code} before the run finished."
    return f"Run worker (pid {pid}) is gone and the run never finished."
