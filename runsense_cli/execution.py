"""Executing one run: ops in order, each step and log line written to the run's event log."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .config import validate_run_config
from .errors import describe
from .home import database_path
from .runs import ErrorInfo, EventType, RunRecord, RunStatus
from .storage import Storage
from .text import clean, safe_str
from .values import check_tags

if TYPE_CHECKING:
    from .definitions import JobDefinition


@dataclass(frozen=True)
class StepReport:
    """What the CLI is told as a run progresses: a step started, succeeded, failed, or logged."""

    kind: str  # "start" | "success" | "failure" | "log"
    step_key: str
    duration: float = 0.0
    error: ErrorInfo | None = None
    message: str = ""
    level: str = ""


OnStep = Callable[[StepReport], None]


class RunLogger:
    """`context.log`: each call becomes a LOG event on the run, tagged with the current op."""

    def __init__(
        self, storage: Storage, run: RunRecord, step_key: str | None, on_step: OnStep | None
    ):
        self._storage = storage
        self._run = run
        self._step_key = step_key
        self._on_step = on_step

    def _log(self, level: str, message: object, *args: object) -> None:
        text = clean(safe_str(message) % args) if args else safe_str(message)
        self._storage.append_event(
            self._run, EventType.LOG, text, step_key=self._step_key, level=level
        )
        if self._on_step:
            self._on_step(StepReport("log", self._step_key or "", message=text, level=level))

    def debug(self, message: object, *args: object) -> None:
        self._log("DEBUG", message, *args)

    def info(self, message: object, *args: object) -> None:
        self._log("INFO", message, *args)

    def warning(self, message: object, *args: object) -> None:
        self._log("WARNING", message, *args)

    warn = warning

    def error(self, message: object, *args: object) -> None:
        self._log("ERROR", message, *args)

    def exception(self, message: object, *args: object) -> None:
        self._log("ERROR", message, *args)

    def critical(self, message: object, *args: object) -> None:
        self._log("CRITICAL", message, *args)


@dataclass
class OpExecutionContext:
    """What an op whose first parameter is `context` receives."""

    log: RunLogger
    op_config: Any
    run: RunRecord
    op_name: str

    @property
    def run_id(self) -> str:
        return self.run.run_id

    @property
    def job_name(self) -> str:
        return self.run.job_name

    @property
    def dagster_run(self) -> RunRecord:
        return self.run


@dataclass
class RunResult:
    """How a run ended, with the outputs of the ops that finished."""

    run: RunRecord
    outputs: dict[str, Any] = field(default_factory=dict)
    failed_step: str | None = None
    error: ErrorInfo | None = None

    @property
    def success(self) -> bool:
        return self.run.status == RunStatus.SUCCESS

    @property
    def run_id(self) -> str:
        return self.run.run_id

    def output_for_node(self, name: str) -> Any:
        return self.outputs[name]


ExecuteInProcessResult = RunResult


def execute_run(
    storage: Storage, job: JobDefinition, run: RunRecord, on_step: OnStep | None = None
) -> RunResult:
    """Take a STARTING run through STARTED to SUCCESS or FAILURE.

    Ctrl-C cancels the run (RUN_CANCELED) and is re-raised, so the caller still stops. Should
    runsense itself fail mid-run (an observer, the storage), the run still ends, as FAILURE.
    """
    run = storage.set_run_status(run, RunStatus.STARTED)
    try:
        return _execute_steps(storage, job, run, on_step)
    except BaseException as exc:
        _end_unfinished(storage, run, exc)
        raise


def _end_unfinished(storage: Storage, run: RunRecord, exc: BaseException) -> None:
    try:
        if storage.get_run(run.run_id).is_finished:
            return
        if isinstance(exc, KeyboardInterrupt):
            storage.set_run_status(run, RunStatus.CANCELED, "Run canceled (interrupted).")
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


def _execute_steps(
    storage: Storage, job: JobDefinition, run: RunRecord, on_step: OnStep | None
) -> RunResult:
    ops_config = (run.run_config.get("ops") or {}) if run.run_config else {}
    outputs: dict[str, Any] = {}
    for node in job.nodes:
        started = time.perf_counter()
        storage.append_event(
            run,
            EventType.STEP_START,
            f'Started execution of step "{node.name}".',
            step_key=node.name,
        )
        if on_step:
            on_step(StepReport("start", node.name))
        try:
            kwargs = {param: outputs[upstream] for param, upstream in node.inputs.items()}
            if node.op.takes_context:
                context = OpExecutionContext(
                    log=RunLogger(storage, run, node.name, on_step),
                    op_config=(ops_config.get(node.name) or {}).get("config"),
                    run=run,
                    op_name=node.name,
                )
                outputs[node.name] = node.op.fn(context, **kwargs)
            else:
                outputs[node.name] = node.op.fn(**kwargs)
        except KeyboardInterrupt:
            storage.set_run_status(
                run, RunStatus.CANCELED, f'Run canceled during step "{node.name}" (interrupted).'
            )
            raise
        except BaseException as exc:
            error = ErrorInfo.from_exception(exc, skip_frames=1)
            duration = time.perf_counter() - started
            storage.append_event(
                run,
                EventType.STEP_FAILURE,
                f'Execution of step "{node.name}" failed: {error}',
                step_key=node.name,
                error=error,
            )
            if on_step:
                on_step(StepReport("failure", node.name, duration, error))
            run = storage.set_run_status(
                run,
                RunStatus.FAILURE,
                f'Execution of run for "{job.name}" failed. Step "{node.name}" failed: {error}',
                error=error,
            )
            return RunResult(run, outputs, node.name, error)
        duration = time.perf_counter() - started
        storage.append_event(
            run,
            EventType.STEP_SUCCESS,
            f'Finished execution of step "{node.name}" in {_format_duration(duration)}.',
            step_key=node.name,
        )
        if on_step:
            on_step(StepReport("success", node.name, duration))
    run = storage.set_run_status(run, RunStatus.SUCCESS)
    return RunResult(run, outputs)


def start_run(
    storage: Storage,
    job: JobDefinition,
    run_config: Mapping[str, Any] | None = None,
    tags: Mapping[str, Any] | None = None,
    *,
    launched_by: str,
    origin: dict[str, Any] | None = None,
) -> RunRecord:
    """Create a run that this process executes now (status STARTING, this pid as its worker)."""
    all_tags = {**job.tags, **check_tags(tags)}
    all_tags.setdefault("runsense/launched_by", launched_by)
    return storage.create_run(
        job.name,
        job.location,
        dict(run_config or {}),
        all_tags,
        status=RunStatus.STARTING,
        origin=origin,
        worker_pid=os.getpid(),
    )


def execute_in_process(
    job: JobDefinition,
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
    run = start_run(storage, job, config, tags, launched_by="execute_in_process")
    result = execute_run(storage, job, run)
    if raise_on_error and result.error is not None:
        raise RuntimeError(f'step "{result.failed_step}" failed: {result.error}')
    return result


# One open connection per (process, database file) for execute_in_process: closing the last
# connection to a WAL database checkpoints it, which costs more than the whole run.
_open_storages: dict[tuple[int, str], tuple[int, Storage]] = {}


def _shared_storage(home: str | None) -> Storage:
    path = str(database_path(home))
    key = (os.getpid(), path)
    cached = _open_storages.get(key)
    try:
        inode = os.stat(path).st_ino
    except FileNotFoundError:
        inode = -1
    if cached is not None and cached[0] == inode:
        return cached[1]
    storage = Storage.open(home)
    _open_storages[key] = (os.stat(path).st_ino, storage)
    return storage


def _format_duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    return f"{seconds:.2f}s"
