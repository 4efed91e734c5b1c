"""A run worker: the process that executes one claimed run.

Either a fresh interpreter (`python -m runsense_cli _worker`, "cold": it imports the project
itself) or a process forked from one that has loaded the project already (`warm_worker`); both
end in `run_claimed`, so a run is executed the same way whichever started it.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import RunsenseError, describe
from .identity import current
from .runs import ErrorInfo, RunRecord, RunStatus
from .storage import Storage, open_storage

if TYPE_CHECKING:
    from .definitions import Definitions

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


def run_claimed(
    storage: Storage, run_id: str, token: str, project: LoadedProject | None = None
) -> int:
    """Confirm the launcher's claim (recording this process as the run's worker), get the job,
    execute the run; the process's exit code.

    If the claim no longer holds (the run was cancelled or taken) this worker exits 0 without
    running anything: a run must never be executed twice.
    """
    run = storage.register_worker(run_id, token, str(current()))
    if run is None:
        _end_if_canceled(storage, run_id)
        return 0
    from .heartbeat import Heartbeat

    with Heartbeat(storage, run_id):  # from now on: loading a big project takes time too
        return _load_and_execute(storage, run, project)


def _load_and_execute(storage: Storage, run: RunRecord, project: LoadedProject | None) -> int:
    from .cancel import cancel_on_sigterm
    from .execution import execute_run
    from .run_output import stamp_output

    try:
        job = _load_job(storage, run.run_id, run.job_name, project)
    except BaseException as exc:
        storage.set_run_status(
            run,
            RunStatus.FAILURE,
            f'Run worker could not load job "{run.job_name}": {describe(exc)}',
            error=ErrorInfo.from_exception(exc),
        )
        return 1
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


def _load_job(storage: Storage, run_id: str, job_name: str, project: LoadedProject | None):
    from .project import ProjectRef, load_project

    origin = storage.run_origin(run_id)
    if origin is None:
        raise RunsenseError(f"run {run_id} does not record which project it belongs to")
    os.chdir(origin["directory"])
    if project is not None and project.holds(origin):
        return project.definitions.get_job(job_name)
    return load_project(ProjectRef.from_origin(origin)).get_job(job_name)
