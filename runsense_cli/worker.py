"""Run workers: the processes that execute claimed runs.

Either a fresh interpreter for one run (`python -m runsense_cli _worker`, "cold": it imports the
project itself, `run_claimed`) or a run server forked from a process that has loaded the project
already (`warm_worker`, `serve_warm`); both confirm the claim before anything runs and execute
the run through `execute_run`, so a run is executed the same way whichever started it.
"""

from __future__ import annotations

import os
import signal
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import RunsenseError, describe
from .identity import current
from .runs import ErrorInfo, EventType, RunRecord, RunStatus
from .storage import Storage, open_storage

if TYPE_CHECKING:
    from .definitions import Definitions
    from .execution import AfterEnd

USAGE = "usage: python -m runsense_cli _worker RUN_ID [--home DIR] --claim TOKEN"


@dataclass(frozen=True)
class LoadedProject:
    """A project this process has imported already: runs recorded with the same origin take
    their job from it instead of importing the project again."""

    origin: dict[str, Any]
    definitions: Definitions

    def holds(self, origin: dict[str, Any]) -> bool:
        keys = ("module", "directory", "file")
        return all(self.origin.get(key) == origin.get(key) for key in keys)


def main(argv: list[str]) -> int:
    """The cold worker's entry point: parse the arguments, open the storage, run the claim."""
    if not argv or argv[0].startswith("-"):
        print(USAGE, file=sys.stderr)
        return 2
    run_id, options = argv[0], dict(zip(argv[1::2], argv[2::2], strict=False))
    token = options.get("--claim")
    if not token:
        print(USAGE, file=sys.stderr)
        return 2
    try:
        storage = open_storage(options.get("--home"), give_up_after=None)
    except RunsenseError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2
    with storage:
        return run_claimed(storage, run_id, token)


@dataclass(frozen=True)
class Outcome:
    """How a run server is done with one claimed run."""

    code: int  # the exit code a one-run worker would end with
    # Nothing the run did can reach a later run here: it ended SUCCESS or FAILURE by this
    # process's commit with no cancel requested (so no signal is on its way), or it was never
    # this process's; the server may run another (if the run left nothing else behind).
    reusable: bool
    final: RunRecord | None = None  # the run as this process last stored it
    next: Any = None  # the run server's next claim, taken in the commit that ended this run


def run_claimed(storage: Storage, run_id: str, token: str) -> int:
    """A cold worker's run: confirm the launcher's claim (recording this process as the run's
    worker), import the project and get the job, execute the run; the process's exit code.

    If the claim no longer holds (the run was cancelled or taken) nothing is run: a run must
    never be executed twice.
    """
    run = storage.register_worker(run_id, token, str(current()))
    if run is None:
        _end_if_canceled(storage, run_id)
        return 0
    from .heartbeat import Heartbeat

    with Heartbeat(storage, run_id):  # from now on: loading a big project takes time too
        return _load_and_execute(storage, run)


class _ClaimLost(Exception):
    """The claim no longer holds when the run is to start (it was cancelled or taken)."""


def serve_warm(
    storage: Storage,
    claimed: RunRecord,
    token: str,
    project: LoadedProject,
    *,
    taken: bool = False,
    started: bool = False,
    origin: dict[str, Any] | None = None,
    after_end: AfterEnd | None = None,
) -> Outcome:
    """`run_claimed` for a process that has the project loaded: the job is taken first and
    the claim confirmed in the commit that starts the run (one write fewer per run, which on
    PostgreSQL all wait their turn for the same lock). A run of another project is executed
    too, but then this process runs nothing more: that project stays imported in it.

    `taken`: the server claimed `claimed` itself (registered already; STARTED too if
    `started`), with its `origin`. `after_end` runs in the commit that ends a run of the loaded
    project (see `execute_run`); what it returned is the outcome's `next`."""
    try:
        job, ours = _load_job(storage, claimed.run_id, claimed.job_name, project, origin)
    except BaseException as exc:
        run = claimed if taken else storage.register_worker(claimed.run_id, token, str(current()))
        if run is None:
            _end_if_canceled(storage, claimed.run_id)
            return Outcome(0, reusable=True)
        return _failed_to_load(storage, run, exc)
    from .cancel import cancel_on_sigterm
    from .execution import execute_run
    from .run_output import stamp_output

    def registered() -> RunRecord:
        run = storage.register_worker(claimed.run_id, token, str(current()))
        if run is None:
            raise _ClaimLost()
        return run

    stamp_output()
    try:
        with cancel_on_sigterm():
            result = execute_run(
                storage,
                job,
                claimed if taken else registered,
                started=started,
                after_end=after_end if ours else None,
            )
    except _ClaimLost:
        _end_if_canceled(storage, claimed.run_id)
        return Outcome(0, reusable=ours)
    except KeyboardInterrupt:
        return Outcome(1, reusable=False)  # cancelled: execute_run has stored the run CANCELED
    following = result.after_end
    # SUCCESS or FAILURE may also be written over a cancel request (CANCELING): then a signal
    # for this run may still be on its way, and this process must run nothing more. (A next
    # run was taken only if there was none.)
    ended = following is not None or (
        result.run.status in (RunStatus.SUCCESS, RunStatus.FAILURE)
        and storage.status_event_for_run(claimed.run_id, EventType.RUN_CANCELING) is None
    )
    code = 0 if result.success else 1
    return Outcome(code, reusable=ended and ours, final=result.run, next=following)


def _failed_to_load(storage: Storage, run: RunRecord, exc: BaseException) -> Outcome:
    failed = storage.set_run_status(
        run,
        RunStatus.FAILURE,
        f'Run worker could not load job "{run.job_name}": {describe(exc)}',
        error=ErrorInfo.from_exception(exc),
    )
    return Outcome(1, reusable=failed is not None)


def _load_and_execute(storage: Storage, run: RunRecord) -> int:
    from .cancel import cancel_on_sigterm
    from .execution import execute_run
    from .run_output import stamp_output

    try:
        job, _ = _load_job(storage, run.run_id, run.job_name, None)
    except BaseException as exc:
        return _failed_to_load(storage, run, exc).code
    stamp_output()
    try:
        with cancel_on_sigterm():
            result = execute_run(storage, job, run)
    except KeyboardInterrupt:
        return 1  # cancelled: execute_run has stored the run CANCELED
    return 0 if result.success else 1


def _end_if_canceled(storage: Storage, run_id: str) -> None:
    """A run cancelled after its claim and before any worker took it ends here: no worker ever
    will (register_worker only accepts STARTING)."""
    run = storage.get_run(run_id)
    if run.status == RunStatus.CANCELING and run.worker is None:
        storage.set_run_status(
            run,
            RunStatus.CANCELED,
            "Run canceled before it started.",
            only_from=[RunStatus.CANCELING],
        )


def _load_job(
    storage: Storage,
    run_id: str,
    job_name: str,
    project: LoadedProject | None,
    origin: dict[str, Any] | None = None,
) -> tuple[Any, bool]:
    """The run's job, and whether it came from `project` (not imported here for this run);
    `origin`: the run's, if read already."""
    from .project import ProjectRef, load_project

    origin = origin or storage.run_origin(run_id)
    if origin is None:
        raise RunsenseError(f"run {run_id} does not record which project it belongs to")
    os.chdir(origin["directory"])
    if project is not None and project.holds(origin):
        return project.definitions.get_job(job_name), True
    return load_project(ProjectRef.from_origin(origin)).get_job(job_name), False


def death_reason(pid: int | None, code: int) -> str:
    """Why a worker that exited with `code` (negative: killed by that signal) ended its run."""
    who = f"Run worker (pid {pid})" if pid else "Run worker"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"{who} was killed by {name} before the run finished."
    return f"{who} exited with code {code} before the run finished."
