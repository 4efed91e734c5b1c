"""Cancelling runs (SPEC §12): QUEUED → CANCELED at once; in progress → CANCELING, then the
worker is stopped on its own node and the run ends CANCELED.

The database says what should happen (CANCELING); whoever runs on the worker's node makes it
happen: the `runs cancel` command when it is there, else that node's daemon on its next pass
(`enforce_cancels`). A worker turns SIGTERM into `RunCanceled` raised in the op in progress, so
the run ends CANCELED by itself; one that has not ended `CANCEL_GRACE_S` after the request gets
SIGKILL, and then CANCELED is written for it, once (compare-and-set from CANCELING).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator

from .identity import ProcessId
from .runs import EventType, RunRecord, RunStatus
from .storage import Storage

CANCEL_GRACE_S = 10.0
_CANCELABLE_NOW = (RunStatus.QUEUED, RunStatus.NOT_STARTED)
_STOPPABLE = (RunStatus.STARTING, RunStatus.STARTED)


class RunCanceled(KeyboardInterrupt):
    """Raised in a run's main thread when its worker gets SIGTERM. A KeyboardInterrupt, so user
    code's `except Exception` does not swallow it and execution stores the run CANCELED."""

    reason = "stopped by SIGTERM"


@contextlib.contextmanager
def cancel_on_sigterm() -> Iterator[None]:
    """While a run executes here, SIGTERM raises RunCanceled in it (once: a second SIGTERM during
    the clean-up is ignored). Only the main thread can install handlers; elsewhere a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired = []

    def handler(signum: int, frame: object) -> None:
        if not fired:
            fired.append(signum)
            raise RunCanceled()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def request_cancel(storage: Storage, run: RunRecord) -> RunRecord:
    """Move one run towards CANCELED (compare-and-set); returns it as stored afterwards.

    A QUEUED run becomes CANCELED at once; a run in progress becomes CANCELING. If another
    process moved it meanwhile (a launcher claimed it), the decision is taken again."""
    for _ in range(5):
        if run.status in _CANCELABLE_NOW:
            moved = storage.set_run_status(
                run,
                RunStatus.CANCELED,
                "Run canceled before it started.",
                only_from=_CANCELABLE_NOW,
            )
        elif run.status in _STOPPABLE:
            moved = storage.set_run_status(
                run, RunStatus.CANCELING, "Cancel requested.", only_from=_STOPPABLE
            )
        else:
            return run  # already CANCELING or finished
        if moved is not None:
            return moved
        run = storage.get_run(run.run_id)
    return run


def enforce_cancels(
    storage: Storage,
    signalled: dict[str, int],
    *,
    run_ids: Iterable[str] | None = None,
    grace: float = CANCEL_GRACE_S,
    clock: Callable[[], float] = time.time,
) -> list[RunRecord]:
    """One pass over CANCELING runs whose worker is on this node: SIGTERM once, SIGKILL once the
    grace since the request has passed, and CANCELED written for a worker that is gone.

    `signalled` (run id → 1 after SIGTERM, 2 after SIGKILL) is the caller's memory between
    passes. Returns the runs this pass ended."""
    wanted = None if run_ids is None else set(run_ids)
    ended: list[RunRecord] = []
    for run in storage.runs_with_status([RunStatus.CANCELING]):
        if wanted is not None and run.run_id not in wanted:
            continue
        worker = ProcessId.parse(run.worker)
        if worker is None or not worker.local:
            continue  # no worker yet (it will refuse its claim) or another node's daemon's job
        if worker.alive() is False:
            done = storage.set_run_status(
                run,
                RunStatus.CANCELED,
                f"Run canceled; its worker (pid {worker.pid}) has stopped.",
                only_from=[RunStatus.CANCELING],
            )
            if done is not None:
                ended.append(done)
            signalled.pop(run.run_id, None)
            continue
        step = signalled.get(run.run_id, 0)
        if step == 0:
            _kill(worker.pid, signal.SIGTERM)
            signalled[run.run_id] = 1
        elif step == 1 and clock() >= _requested_at(storage, run) + grace:
            _kill(worker.pid, signal.SIGKILL)
            signalled[run.run_id] = 2
    return ended


def _requested_at(storage: Storage, run: RunRecord) -> float:
    event = storage.status_event_for_run(run.run_id, EventType.RUN_CANCELING)
    return event.timestamp if event else 0.0


def _kill(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signum)


def cancel_runs(
    storage: Storage,
    runs: Iterable[RunRecord],
    *,
    wait: bool = True,
    grace: float = CANCEL_GRACE_S,
    poll: float = 0.1,
) -> list[RunRecord]:
    """Cancel runs; with `wait`, stop the ones whose worker is on this node and wait (at most the
    grace, plus a little) until they have ended. Runs on other nodes are left CANCELING for their
    node's daemon. Returns each run as stored at the end, in the order given."""
    runs = [request_cancel(storage, run) for run in runs]
    signalled: dict[str, int] = {}
    pending = {r.run_id for r in runs if r.status == RunStatus.CANCELING and _here(r)}
    deadline = time.monotonic() + grace + 5.0
    while wait and pending and time.monotonic() < deadline:
        enforce_cancels(storage, signalled, run_ids=pending, grace=grace)
        pending = {rid for rid in pending if not storage.get_run(rid).is_finished}
        if pending:
            time.sleep(poll)
    if not wait:
        enforce_cancels(storage, signalled, run_ids=pending, grace=grace)  # SIGTERM only
    return [storage.get_run(r.run_id) for r in runs]


def _here(run: RunRecord) -> bool:
    """The run's worker (or, before it has one, its launcher) is on this node."""
    owner = ProcessId.parse(run.worker or run.launcher)
    return owner is None or owner.local
