"""Executing one run: ops in order, each step and log line written to the run's event log."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from .config import validate_run_config
from .errors import RunsenseError, describe
from .heartbeat import Heartbeat
from .home import database_path
from .identity import current
from .op_context import OnStep, OpExecutionContext, RunLogger, StepReport
from .runs import ErrorInfo, EventType, RunEvent, RunRecord, RunStatus
from .storage import Storage, database_url, open_storage
from .values import check_tags


class ExecutableJob(Protocol):
    """What execution needs of a job (a `jobs.ExecutableJob`): a protocol, so `jobs` can call
    into this module for `execute_in_process` without an import circle."""

    name: str
    location: str
    tags: dict[str, str]

    @property
    def nodes(self) -> Sequence[Any]: ...


AfterEnd = Callable[[RunRecord], Any]  # see `execute_run`


@dataclass
class RunResult:
    """How a run ended, with the outputs of the ops that finished."""

    run: RunRecord
    outputs: dict[str, Any] = field(default_factory=dict)
    failed_step: str | None = None
    error: ErrorInfo | None = None
    storage: Storage | None = field(default=None, repr=False, compare=False)
    after_end: Any = field(default=None, repr=False, compare=False)  # see `execute_run`

    @property
    def success(self) -> bool:
        return self.run.status == RunStatus.SUCCESS

    @property
    def run_id(self) -> str:
        return self.run.run_id

    @property
    def dagster_run(self) -> RunRecord:
        return self.run

    def output_for_node(self, name: str) -> Any:
        return self.outputs[name]

    def get_run_success_event(self) -> RunEvent:
        """The run's RUN_SUCCESS event, for `build_run_status_sensor_context` in a unit test."""
        return self._status_event(EventType.RUN_SUCCESS)

    def get_run_failure_event(self) -> RunEvent:
        """The run's RUN_FAILURE event, for `build_run_status_sensor_context` in a unit test."""
        return self._status_event(EventType.RUN_FAILURE)

    # Dagster's earlier names, still in its docs' testing snippets.
    get_job_success_event = get_run_success_event
    get_job_failure_event = get_run_failure_event

    def _status_event(self, event_type: EventType) -> RunEvent:
        # Raises, as Dagster does: a test that asks a failed run for its success event has a bug,
        # and a None would only surface later as a context without an event.
        event = self.storage.status_event_for_run(self.run_id, event_type) if self.storage else None
        if event is None:
            raise RunsenseError(
                f"run {self.run_id} has no {event_type.value} event: it ended "
                f"{self.run.status.value}"
            )
        return event


ExecuteInProcessResult = RunResult


def execute_run(
    storage: Storage,
    job: ExecutableJob,
    run: RunRecord | Callable[[], RunRecord],
    on_step: OnStep | None = None,
    *,
    started: bool = False,
    after_end: AfterEnd | None = None,
) -> RunResult:
    """Take a STARTING run through STARTED to SUCCESS or FAILURE. `run` may also be a function
    that creates it (`execute_in_process`): the run is then created in the commit that starts it.
    `started`: the caller has moved `run` to STARTED already (`start_in_commit`). `after_end` is
    called inside the commit that ends the run SUCCESS or FAILURE, if that commit is this
    process's (a run server takes its next run there); what it returns is the result's
    `after_end`.

    Events with nothing between them share a commit: the run's start and its first step's
    start; a step's end and the next step's start, or the run's end.

    Ctrl-C cancels the run (RUN_CANCELED) and is re-raised, so the caller still stops. `on_step`
    only displays progress: if it raises (a terminal that cannot print a character), the run
    goes on without it rather than stopping half-way and staying STARTED. A status move another
    process already made (a cancel) wins: the run stops where it is. Should runsense itself fail
    mid-run (the storage), the run still ends, as FAILURE.
    """
    if started:
        assert isinstance(run, RunRecord)
        started_run: RunRecord | None = run
    else:
        run, started_run = _start(storage, job, run)
    if started_run is None:
        stored = storage.get_run(run.run_id)
        if stored.status == RunStatus.CANCELING:  # cancelled before it started: end it here
            ended = storage.set_run_status(
                stored,
                RunStatus.CANCELED,
                "Run canceled before it started.",
                only_from=[RunStatus.CANCELING],
            )
            stored = ended or storage.get_run(run.run_id)
        return RunResult(stored, storage=storage)
    try:
        with Heartbeat(storage, started_run.run_id):
            return _execute_nodes(storage, job, started_run, _guarded(on_step), after_end)
    except BaseException as exc:
        _end_unfinished(storage, started_run, exc)
        raise


def _start(
    storage: Storage, job: ExecutableJob, run: RunRecord | Callable[[], RunRecord]
) -> tuple[RunRecord, RunRecord | None]:
    """The run (created here if `run` creates it) and, moved to STARTED with its first step's
    STEP_START in the same commit, the started run (None: another process moved it first)."""

    def start() -> tuple[RunRecord, RunRecord | None]:
        record = run() if callable(run) else run
        return record, start_in_commit(storage, job, record)

    return storage.atomic(start, events_last=True)


def start_in_commit(storage: Storage, job: ExecutableJob, run: RunRecord) -> RunRecord | None:
    """Move `run` to STARTED with its first step's STEP_START, inside the caller's transaction;
    the run as started, or None when another process moved it first."""
    started = storage.set_run_status(run, RunStatus.STARTED)
    if started is not None:
        first_step_started(storage, job, started)
    return started


def first_step_started(storage: Storage, job: ExecutableJob, run: RunRecord) -> None:
    """The STEP_START of a just-started run's first step, in the commit that started it."""
    if job.nodes:
        _step_started(storage, run, job.nodes[0].name)


def _step_started(storage: Storage, run: RunRecord, step: str) -> None:
    storage.append_event(
        run, EventType.STEP_START, f'Started execution of step "{step}".', step_key=step
    )


def _step_ended(
    storage: Storage,
    run: RunRecord,
    step: str,
    duration: float,
    following: str | None,
    error: ErrorInfo | None = None,
    job_name: str = "",
    after_end: AfterEnd | None = None,
) -> tuple[RunRecord | None, Any]:
    """The step's end and, in the same commit, the next step's start (`following`), or the
    run's end: FAILURE when the step failed (`error`), else SUCCESS after the last step.
    Returns the run as moved (None: another process moved it first, or the run goes on) and, if
    this commit ended it, what `after_end` returned in it."""

    def end() -> tuple[RunRecord | None, Any]:
        if error is not None:
            storage.append_event(
                run,
                EventType.STEP_FAILURE,
                f'Execution of step "{step}" failed: {error}',
                step_key=step,
                error=error,
            )
            return _ended(
                storage.set_run_status(
                    run,
                    RunStatus.FAILURE,
                    f'Execution of run for "{job_name}" failed. Step "{step}" failed: {error}',
                    error=error,
                ),
                after_end,
            )
        storage.append_event(
            run,
            EventType.STEP_SUCCESS,
            f'Finished execution of step "{step}" in {_format_duration(duration)}.',
            step_key=step,
        )
        if following is not None:
            _step_started(storage, run, following)
            return None, None
        return _ended(storage.set_run_status(run, RunStatus.SUCCESS), after_end)

    return storage.atomic(end, events_last=True)


def _ended(run: RunRecord | None, after_end: AfterEnd | None) -> tuple[RunRecord | None, Any]:
    return run, (after_end(run) if run is not None and after_end is not None else None)


def _end_unfinished(storage: Storage, run: RunRecord, exc: BaseException) -> None:
    try:
        if storage.get_run(run.run_id).is_finished:
            return
        if isinstance(exc, KeyboardInterrupt):
            reason = getattr(exc, "reason", "interrupted")
            storage.set_run_status(run, RunStatus.CANCELED, f"Run canceled ({reason}).")
        else:
            storage.set_run_status(
                run,
                RunStatus.FAILURE,
                f'Execution of run for "{run.job_name}" failed: runsense itself raised '
                f"{describe(exc)}",
                error=ErrorInfo.from_exception(exc),
            )
    except Exception:
        pass  # the storage is what failed: the original error is the one to report


def _execute_nodes(
    storage: Storage,
    job: ExecutableJob,
    run: RunRecord,
    notify: OnStep,
    after_end: AfterEnd | None = None,
) -> RunResult:
    ops_config = (run.run_config.get("ops") or {}) if run.run_config else {}
    outputs: dict[str, Any] = {}
    nodes = job.nodes
    step: str | None = None
    try:
        for index, node in enumerate(nodes):
            step = node.name
            started = time.perf_counter()  # its STEP_START is in the commit before
            notify(StepReport("start", node.name))
            try:
                kwargs = {param: outputs[upstream] for param, upstream in node.inputs.items()}
                if node.op.takes_context:
                    context = OpExecutionContext(
                        log=RunLogger(storage, run, node.name, notify),
                        op_config=(ops_config.get(node.name) or {}).get("config"),
                        run=run,
                        op_name=node.name,
                    )
                    outputs[node.name] = node.op.fn(context, **kwargs)
                else:
                    outputs[node.name] = node.op.fn(**kwargs)
            except KeyboardInterrupt:
                raise
            except BaseException as exc:
                error = ErrorInfo.from_exception(exc, skip_frames=1)
                duration = time.perf_counter() - started
                failed, then = _step_ended(
                    storage, run, node.name, duration, None, error, job.name, after_end
                )
                notify(StepReport("failure", node.name, duration, error))
                final = failed or storage.get_run(run.run_id)
                return RunResult(final, outputs, node.name, error, storage, then)
            duration = time.perf_counter() - started
            following = nodes[index + 1].name if index + 1 < len(nodes) else None
            done, then = _step_ended(
                storage, run, node.name, duration, following, after_end=after_end
            )
            notify(StepReport("success", node.name, duration))
            if following is None:
                final = done or storage.get_run(run.run_id)
                return RunResult(final, outputs, storage=storage, after_end=then)
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM from a cancel (cancel.RunCanceled)
        where = f' during step "{step}"' if step else ""
        reason = getattr(exc, "reason", "interrupted")
        storage.set_run_status(run, RunStatus.CANCELED, f"Run canceled{where} ({reason}).")
        raise
    done = storage.set_run_status(run, RunStatus.SUCCESS)
    return RunResult(done or storage.get_run(run.run_id), outputs, storage=storage)


def _guarded(on_step: OnStep | None) -> OnStep:
    """`on_step`, switched off for the rest of the run at its first error."""
    live = [on_step]

    def notify(report: StepReport) -> None:
        callback = live[0]
        if callback is None:
            return
        try:
            callback(report)
        except Exception:
            live[0] = None

    return notify


def start_run(
    storage: Storage,
    job: ExecutableJob,
    run_config: Mapping[str, Any] | None = None,
    tags: Mapping[str, Any] | None = None,
    *,
    launched_by: str,
    origin: dict[str, Any] | None = None,
    queue: bool = False,
    parent_run_id: str | None = None,
    root_run_id: str | None = None,
) -> RunRecord:
    """Create a run that this process executes now (status STARTING, this pid as its worker),
    or, with `queue`, a QUEUED one for a daemon (which needs `origin` to import the project)."""
    all_tags = {**job.tags, **check_tags(tags)}
    all_tags.setdefault("runsense/launched_by", launched_by)
    return storage.create_run(
        job.name,
        job.location,
        dict(run_config or {}),
        all_tags,
        status=RunStatus.QUEUED if queue else RunStatus.STARTING,
        origin=origin,
        worker=None if queue else str(current()),
        parent_run_id=parent_run_id,
        root_run_id=root_run_id,
    )


def execute_in_process(
    job: ExecutableJob,
    run_config: Mapping[str, Any] | None = None,
    tags: Mapping[str, Any] | None = None,
    home: str | None = None,
    *,
    raise_on_error: bool = False,
) -> RunResult:
    """`job.execute_in_process`: validate, store and run the job here, like any other run."""
    config = validate_run_config(job, run_config)
    check_tags(tags)  # before the storage opens: bad input creates nothing
    storage = _shared_storage(home)
    result = execute_run(
        storage,
        job,
        lambda: start_run(storage, job, config, tags, launched_by="execute_in_process"),
    )
    if raise_on_error and result.error is not None:
        raise RuntimeError(f'step "{result.failed_step}" failed: {result.error}')
    return result


# One open connection per (process, database file) for execute_in_process: closing the last
# connection to a WAL database checkpoints it, which costs more than the whole run.
_open_storages: dict[tuple[int, str], tuple[int, Storage]] = {}


def _shared_storage(home: str | None) -> Storage:
    if url := database_url():
        key = (os.getpid(), url)
        cached = _open_storages.get(key)
        if cached is None:
            cached = _open_storages[key] = (0, open_storage(url=url))
        return cached[1]
    path = str(database_path(home))
    key = (os.getpid(), path)
    cached = _open_storages.get(key)
    try:
        inode = os.stat(path).st_ino
    except FileNotFoundError:
        inode = -1
    if cached is not None and cached[0] == inode:
        return cached[1]
    storage = open_storage(home)
    _open_storages[key] = (os.stat(path).st_ino, storage)
    return storage


def _format_duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    return f"{seconds:.2f}s"
