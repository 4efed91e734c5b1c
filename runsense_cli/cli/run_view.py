"""What `runsense run` prints while a run goes: each op as it starts and ends, as plain lines
when piped (see `plain`)."""

from __future__ import annotations

from ..execution import RunResult, StepReport
from ..runs import RunRecord
from ..text import safe_str
from . import render
from .plain import LineWriter, Part


def _user(text: object) -> Part:
    """User text (op names, log lines, errors): shown as it is, invalid UTF-8 as U+FFFD."""
    return safe_str(text), None


def _status(status: str) -> Part:
    return status, render.STATUS_STYLES.get(status)


class RunPrinter:
    """Op names, log lines and errors are user text: parts, never read as markup."""

    def __init__(self, run: RunRecord, verbose: bool = False, stderr: bool = False) -> None:
        self.run = run
        self.verbose = verbose
        self.out = LineWriter(stderr=stderr)
        self.current_step: str | None = None

    def begin(self) -> None:
        self.out.print(
            ("Run ", None),
            (self.run.run_id[:8], "bold"),
            (" of ", None),
            (safe_str(self.run.job_name), "bold"),
            (" started", None),
        )

    def step(self, report: StepReport) -> None:
        step = _user(report.step_key)
        if report.kind == "start":
            self.current_step = report.step_key
            self.out.print(("  ", None), (render.mark("start"), "cyan"), (" ", None), step)
        elif report.kind == "success":
            self.out.print(
                ("  ", None),
                (render.mark("ok"), "green"),
                (" ", None),
                step,
                (" ", None),
                (render.duration(report.duration), "dim"),
            )
        elif report.kind == "failure":
            self.out.print(
                ("  ", None),
                (render.mark("fail"), "red"),
                (" ", None),
                step,
                (" failed: ", None),
                _user(report.error),
            )
            if self.verbose and report.error is not None:
                self.out.print((report.error.stack, None))
        elif report.kind == "log":
            self.out.print(
                ("    ", None), (safe_str(report.level), "dim"), (" ", None), _user(report.message)
            )

    def end(self, result: RunResult) -> None:
        run = result.run
        head: list[Part] = [
            (f"Run {run.run_id[:8]} ", None),
            _status(run.status.value),
            (f" in {render.duration(run.duration)}", None),
        ]
        if result.success:
            self.out.print(*head)
            return
        self.out.print(
            *head,
            (": op '", None),
            _user(result.failed_step),
            ("' raised ", None),
            _user(result.error),
        )
        if not self.verbose:
            self.out.print((f"Full traceback: runsense runs show {run.run_id[:8]}", "dim"))

    def canceled(self, run: RunRecord, how: str = "interrupted") -> None:
        where = f" during op '{self.current_step}'" if self.current_step else ""
        self.out.print(
            (f"Run {run.run_id[:8]} ", None),
            _status(run.status.value),
            (f" after {render.duration(run.duration)}: {how}{where}. Run id: {run.run_id}", None),
        )
