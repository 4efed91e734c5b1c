"""A run worker: the subprocess that executes one queued run (`python -m runsense_cli _worker`)."""

from __future__ import annotations

import os
import sys

from .errors import RunsenseError
from .runs import ErrorInfo, RunStatus
from .storage import Storage

USAGE = "usage: python -m runsense_cli _worker RUN_ID [--home DIR]"


def main(argv: list[str]) -> int:
    """Claim the run (QUEUED → STARTING with this pid), load its project, execute it.

    If another worker claimed it first this one exits 0 quietly: starting a run twice is the one
    thing a launcher race must never do.
    """
    if not argv or argv[0].startswith("-"):
        print(USAGE, file=sys.stderr)
        return 2
    run_id, home = argv[0], None
    if len(argv) >= 3 and argv[1] == "--home":
        home = argv[2]
    try:
        storage = Storage.open(home)
    except RunsenseError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2
    with storage:
        run = storage.get_run(run_id)
        if run.status != RunStatus.QUEUED or not storage.claim_run(
            run_id, RunStatus.QUEUED, os.getpid()
        ):
            return 0
        run = storage.get_run(run_id)
        try:
            job = _load_job(storage, run_id, run.job_name)
        except BaseException as exc:
            storage.set_run_status(
                run,
                RunStatus.FAILURE,
                f'Run worker could not load job "{run.job_name}": {exc}',
                error=ErrorInfo.from_exception(exc),
            )
            return 1
        from .execution import execute_run

        result = execute_run(storage, job, run)
        return 0 if result.success else 1


def _load_job(storage: Storage, run_id: str, job_name: str):
    from .project import ProjectRef, load_project

    origin = storage.run_origin(run_id)
    if origin is None:
        raise RunsenseError(f"run {run_id} does not record which project it belongs to")
    os.chdir(origin["directory"])
    return load_project(ProjectRef.from_origin(origin)).get_job(job_name)
