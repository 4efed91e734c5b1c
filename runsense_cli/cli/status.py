"""`runsense status`: daemons, sensors and runs at a glance; exit 1 when nothing is watching."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from . import render
from .app_state import state_of
from .render import lit


def heartbeat_timeout(state: Any) -> float:
    from ..launcher import DEFAULT_HEARTBEAT_TIMEOUT_S

    return float(state.setting("heartbeat_timeout", None, DEFAULT_HEARTBEAT_TIMEOUT_S))


def warn_if_no_daemon(state: Any) -> None:
    """One line on stderr when sensors would wait for a daemon that does not run."""
    from ..status import no_daemon_alive

    if no_daemon_alive(state.storage, heartbeat_timeout(state)):
        render.console(stderr=True).print(
            "No runsense daemon is running: sensors react only to `runsense sensor tick`"
            " (start one with `runsense daemon`).",
            soft_wrap=True,
        )


def status(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show each daemon (node, pid, since, last heartbeat, code current?), the sensors with their
    lag and failed reactions, and the runs queued and in progress. Exits 1 when sensors are
    RUNNING but no daemon is alive, so it serves as a health check.

    \b
    Examples:
      runsense status
      runsense status --json || alert "runsense: no daemon"
    """
    from ..errors import ProjectError
    from ..status import status_report

    state = state_of(ctx)
    try:
        evaluator = state.evaluator
    except ProjectError as exc:  # a broken project: the daemons may still be running old code
        render.console(stderr=True).print(f"warning: {exc}", markup=False, soft_wrap=True)
        evaluator = None
    report = status_report(state.storage, heartbeat_timeout(state), evaluator)
    if as_json:
        render.print_json(_report_json(report))
    else:
        _print_report(report)
    raise typer.Exit(0 if report.healthy else 1)


def _report_json(report: Any) -> dict[str, Any]:
    return {
        "healthy": report.healthy,
        "daemons": [
            {
                "node": d.node,
                "pid": d.pid,
                "location": d.location,
                "started_at": render.iso(d.started_at),
                "heartbeat_at": render.iso(d.heartbeat_at),
                "alive": d.alive,
                "code_current": d.code_current,
                "reload_error": d.reload_error,
            }
            for d in report.daemons
        ],
        "sensors": [
            {
                "name": s.name,
                "status": s.status,
                "run_status": s.run_status,
                **render.lag_json(s.lag),
                "failed_reactions": s.failed,
            }
            for s in report.sensors
        ],
        "queued": [render.run_json(run) for run in report.queued],
        "in_progress": [render.run_json(run) for run in report.in_progress],
    }


def _print_report(report: Any) -> None:
    from rich.table import Table

    out = render.console()
    if report.daemons:
        table = Table(header_style="bold", title="Daemons", title_justify="left")
        for column in ("node", "pid", "since", "heartbeat", "state", "code"):
            table.add_column(column, no_wrap=True)
        table.add_column("note", overflow="ellipsis")
        for d in report.daemons:
            code = {True: "current", False: "[yellow]stale[/yellow]", None: "-"}[d.code_current]
            table.add_row(
                lit(d.node),
                str(d.pid),
                render.local_time(d.started_at),
                render.ago(d.heartbeat_at),
                "[green]alive[/green]" if d.alive else "[red]silent[/red]",
                code,
                lit(f"reload failed: {d.reload_error}" if d.reload_error else ""),
            )
        out.print(table)
    else:
        out.print("No daemon has registered. Start one with: runsense daemon")
    if report.sensors:
        table = Table(header_style="bold", title="Sensors", title_justify="left")
        for column in ("sensor", "state", "watches", "waiting", "failed"):
            table.add_column(column, no_wrap=True)
        for s in report.sensors:
            table.add_row(
                lit(s.name),
                render.styled(s.status),
                s.run_status,
                render.waiting(s.lag),
                str(s.failed),
            )
        out.print(table)
    out.print(f"Runs queued: {len(report.queued)}; in progress: {len(report.in_progress)}")
    if report.in_progress:
        out.print(render.runs_table(report.in_progress))
    if not report.healthy:
        out.print("[red]Sensors are RUNNING but no daemon is alive.[/red]")
