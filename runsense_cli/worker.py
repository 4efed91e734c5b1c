"""A run worker: the subprocess that executes one claimed run (`python -m runsense_cli _worker`)."""

from __future__ import annotations

import os
import sys

from .errors import RunsenseError, describe
from .identity import current
from .runs import ErrorInfo, RunRecord, RunStatus
from .storage import Storage, open_storage

USAGE = "usage: python -m runsense_cli _worker RUN_ID [--home DIR] --claim TOKEN"


def main(argv: list[str]) -> int:
    """Confirm the launcher's claim (recording this process as the run's worker), load the
    project, execute the run.

    If the claim no longer holds (the run was cancelled or taken) this worker exits 0 without
    running anything: a run must never be executed twice.
    """
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
        run = storage.register_worker(run_id, token, str(current()))
        if run is None:
            _end_if_canceled(storage, run_id)
            return 0
        from .execution import Heartbeat

        with Heartbeat(storage, run_id):  # from now on: loading a big project takes time too
            return _load_and_execute(storage, run)


def _load_and_execute(storage: Storage, run: RunRecord) -> int:
    from .cancel import cancel_on_sigterm
    from .execution import execute_run
    from .run_output import stamp_output

    try:
        job = _load_job(storage, run.run_id, run.job_name)
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


def _load_job(storage: Storage, run_id: str, job_name: str):
    from .project import ProjectRef, load_project

    origin = storage.run_origin(run_id)
    if origin is None:
        raise RunsenseError(f"run {run_id} does not record which project it belongs to")
    os.chdir(origin["directory"])
    return load_project(ProjectRef.from_origin(origin)).get_job(job_name)
