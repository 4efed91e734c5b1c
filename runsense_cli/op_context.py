"""What an op sees while it runs: its `context` (`OpExecutionContext`) and `context.log`, whose
lines become LOG events on the run; and the progress reports a run's caller may watch."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .runs import ErrorInfo, EventType, RunRecord
from .storage import Storage
from .text import clean, safe_str


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
