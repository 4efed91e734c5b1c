"""What `runsense run` prints while a run goes: each op as it starts and ends."""

from __future__ import annotations

from ..execution import RunResult, StepReport
from ..runs import RunRecord
from . import render
from .render import lit


class RunPrinter:
    """Op names, log lines and errors are user text: always escaped, never read as markup."""

    def __init__(self, run: RunRecord, verbose: bool = False, stderr: bool = False) -> None:
        self.run = run
        self.verbose = verbose
        self.out = render.console(stderr=stderr)
        self.current_step: str | None = None

    def begin(self) -> None:
        self.out.print(
            f"Run [bold]{self.run.run_id[:8]}[/bold] of [bold]{lit(self.run.job_name)}[/bold] started"
        )

    def step(self, report: StepReport) -> None:
        step = lit(report.step_key)
        if report.kind == "start":
            self.current_step = report.step_key
            self.out.print(f"  [cyan]{render.mark('start')}[/cyan] {step}")
        elif report.kind == "success":
            self.out.print(
                f"  [green]{render.mark('ok')}[/green] {step} "
                f"[dim]{render.duration(report.duration)}[/dim]"
            )
        elif report.kind == "failure":
            self.out.print(
                f"  [red]{render.mark('fail')}[/red] {step} failed: {lit(report.error)}",
                markup=True,
            )
            if self.verbose and report.error is not None:
                self.out.print(report.error.stack, markup=False, highlight=False)
        elif report.kind == "log":
            self.out.print(f"    [dim]{lit(report.level)}[/dim] {lit(report.message)}")

    def end(self, result: RunResult) -> None:
        run = result.run
        status = render.styled(run.status.value)
        took = render.duration(run.duration)
        if result.success:
            self.out.print(f"Run {run.run_id[:8]} {status} in {took}")
        else:
            self.out.print(
                f"Run {run.run_id[:8]} {status} in {took}: "
                f"op '{lit(result.failed_step)}' raised {lit(result.error)}"
            )
            if not self.verbose:
                self.out.print(f"[dim]Full traceback: runsense runs show {run.run_id[:8]}[/dim]")

    def canceled(self, run: RunRecord, how: str = "interrupted") -> None:
        where = f" during op '{self.current_step}'" if self.current_step else ""
        self.out.print(
            f"Run {run.run_id[:8]} {render.styled(run.status.value)} after "
            f"{render.duration(run.duration)}: {how}{where}. Run id: {run.run_id}"
        )
