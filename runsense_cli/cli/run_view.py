"""What `runsense run` prints while a run goes: each op as it starts and ends.

Lines are (text, style) parts. Piped, rich would only drop the styles again, so plain lines are
written without importing rich: rich is a fifth of what a one-op `runsense run` waits for (SPEC §8:
≤ 0.12 s). Text rich would change (tabs, control characters, a line wider than a pipe) still goes
through rich, and so does everything on a terminal: the output is the same either way.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from ..execution import RunResult, StepReport
from ..runs import RunRecord
from ..text import safe_str
from . import render

Part = tuple[str, str | None]  # text, and its rich style (None: plain)
PLAIN_MAX = 10_000  # characters of a line written without rich (rich folds at PIPE_WIDTH cells)


def is_terminal(stream: Any) -> bool:
    """rich's own test (Console.is_terminal), so both paths agree on when styles apply."""
    compatible = os.environ.get("TTY_COMPATIBLE", "")
    if compatible in ("0", "1"):
        return compatible == "1"
    force = os.environ.get("FORCE_COLOR")
    if force is not None:
        return force != ""
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:
        return False


class LineWriter:
    """Prints lines of parts: plain when rich would print them unchanged, else through rich."""

    def __init__(self, stderr: bool = False) -> None:
        self.stderr = stderr
        self._console: Any = None

    def print(self, *parts: Part) -> None:
        stream = sys.stderr if self.stderr else sys.stdout  # as it is now: tests swap it
        text = "".join(part for part, _ in parts)
        if self._console is None and not is_terminal(stream) and _unchanged_by_rich(text):
            stream.write(text + "\n")
            stream.flush()  # as rich does: progress lines interleave with stderr in order
            return
        from rich.text import Text

        if self._console is None:
            self._console = render.console(stderr=self.stderr)
        self._console.print(Text.assemble(*parts))


def _unchanged_by_rich(text: str) -> bool:
    return len(text) < PLAIN_MAX and all(line.isprintable() for line in text.split("\n"))


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
