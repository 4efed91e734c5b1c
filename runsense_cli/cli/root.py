"""The Typer app (`app`) and its root commands: `init`, `run`, `jobs` and `daemon`; `runs` and
`sensor` are groups.

Global options (-f, -m, --home, -v) come from RunsenseGroup and RunsenseCommand (cli/command.py).
"""

# No `from __future__ import annotations` here: Typer would turn every string annotation of every
# command back into objects with eval at each start (~10 ms of every Typer command).

import signal
from pathlib import Path
from typing import Annotated, Any

import typer

from .. import __version__
from . import complete
from .app_state import state_of
from .command import RunsenseCommand
from .errors import RunsenseGroup

# rich_markup_mode=None keeps `--help` on click's plain formatter: it does not import rich,
# which halves the start-up time of every help screen.
app = typer.Typer(
    cls=RunsenseGroup,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="""Run Python jobs and react to how their runs end with run status sensors.

    \b
    Examples:
      runsense init my_project && cd my_project
      runsense run hello_job && runsense sensor tick
      runsense runs list --status failed
    """,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"runsense {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Run Python jobs and react to how their runs end with run status sensors."""
    # The global options (-f, -m, --home, -v) are added by RunsenseGroup and RunsenseCommand,
    # so they are accepted after the command too.


@app.command(cls=RunsenseCommand)
def init(
    directory: Annotated[
        Path,
        typer.Argument(
            metavar="[DIR]", help="Where to write it (default: here).", show_default=False
        ),
    ] = Path("."),
) -> None:
    """Write a minimal project (defs.py with a job and a sensor, and the setting that finds it)
    into DIR; it never overwrites a file.

    \b
    Examples:
      runsense init
      runsense init my_project && cd my_project && runsense run hello_job
    """
    import shlex

    from ..scaffold import init_project
    from . import render

    written = init_project(directory)
    out = render.console()
    out.print(f"Created {', '.join(str(path) for path in written)}.", markup=False, soft_wrap=True)
    cd = (
        ""
        if directory.resolve() == Path.cwd().resolve()
        else f"cd {shlex.quote(str(directory))} && "
    )
    # soft_wrap: one line however narrow the terminal, so it pastes back into a shell.
    out.print(
        f"Try it: {cd}runsense run hello_job && runsense sensor tick && runsense runs list",
        markup=False,
        soft_wrap=True,
    )


@app.command(cls=RunsenseCommand)
def run(
    ctx: typer.Context,
    job_name: Annotated[
        str,
        typer.Argument(metavar="JOB", help="The job to run.", autocompletion=complete.job_names),
    ],
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", "-c", metavar="FILE", help="Run config file (.json, .toml, .yaml)."
        ),
    ] = None,
    config_json: Annotated[
        str | None,
        typer.Option(
            "--config-json", metavar="JSON", help="Run config as JSON (merged over --config)."
        ),
    ] = None,
    tag: Annotated[
        list[str] | None,
        typer.Option("--tag", "-t", metavar="KEY=VALUE", help="A run tag; repeatable."),
    ] = None,
    queue: Annotated[
        bool, typer.Option("--queue", help="Queue the run for a daemon and print its id.")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the run as JSON (progress goes to stderr).")
    ] = False,
) -> None:
    """Run JOB here in the foreground; exit 0 on success, 1 on failure or cancel, 130 on Ctrl-C.
    With --queue, a daemon runs it instead.

    \b
    Examples:
      runsense run etl_job
      runsense run etl_job --config run.toml --tag team=data
      runsense run etl_job --queue
    """
    from .run_here import run_job

    code = run_job(state_of(ctx), job_name, config, config_json, tag, queue=queue, as_json=as_json)
    raise typer.Exit(code)


@app.command(cls=RunsenseCommand)
def jobs(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List the project's jobs and their ops.

    \b
    Examples:
      runsense jobs
      runsense -m my_project.defs jobs --json
    """
    from . import render

    definitions = state_of(ctx).definitions
    rows = [
        {
            "name": job.name,
            "location": job.location,
            "ops": [node.name for node in job.nodes],
            "description": job.description,
        }
        for job in definitions.jobs.values()
    ]
    if as_json:
        render.print_json(rows)
        return
    from rich.table import Table

    table = Table(header_style="bold")
    for column in ("job", "ops", "description"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(
            render.lit(row["name"]),
            render.lit(f" {render.mark('arrow')} ".join(row["ops"])),
            render.lit((row["description"] or "").split("\n")[0]),
        )
    render.console().print(render.keep_whole(table, [0, 1], flexible=2))


@app.command(cls=RunsenseCommand)
def daemon(
    ctx: typer.Context,
    interval: Annotated[
        float | None,
        typer.Option(
            metavar="SECONDS",
            help="Longest wait between passes; a change wakes it sooner [default: 0.5].",
            min=0.01,
            max=3600,
        ),
    ] = None,
    max_concurrent_runs: Annotated[
        int | None,
        typer.Option(
            metavar="N",
            help="Run workers at most at once on this machine [default: 4].",
            min=1,
            max=10_000,
        ),
    ] = None,
    runs_per_worker: Annotated[
        int | None,
        typer.Option(
            metavar="N",
            help="Runs a warm worker process runs one after another; 1: a fresh process for"
            " each run [default: 100].",
            min=1,
            max=1_000_000,
        ),
    ] = None,
    page_size: Annotated[
        int,
        typer.Option(
            metavar="N",
            help="Events per committed page (smaller: slow sensors commit sooner).",
            min=1,
            max=1_000_000,
        ),
    ] = 1000,
) -> None:
    """Run the sensor daemon in the foreground until Ctrl-C or SIGTERM.

    \b
    Examples:
      runsense daemon
      runsense daemon --interval 0.2 --max-concurrent-runs 8 > daemon.log
    """
    from ..daemon import serve
    from .daemon_view import make_reporter

    # Until the daemon installs its own handlers, a stop signal during start-up exits cleanly.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _exit_cleanly)
    state = state_of(ctx)
    state.definitions  # noqa: B018 - a broken project is reported before anything else
    state.long_running = True  # a lost database is retried for as long as it takes
    evaluator = state.evaluator_unregistered
    serve(
        evaluator,
        state.launcher(max_concurrent_runs, runs_per_worker),
        make_reporter(evaluator),
        home=state.home,
        interval=float(state.setting("interval", interval, 0.5)),  # type: ignore[arg-type]
        page_size=page_size,
        retention=_retention(state),
    )


def _retention(state: Any) -> float | None:
    from ..operations import parse_age

    value = state.settings.get("retention")
    return parse_age(value) if value else None


def _exit_cleanly(*_: object) -> None:
    raise typer.Exit(0)


def _register_groups() -> None:
    from . import sensor_history, sensors  # noqa: F401 - they add their commands to sensor_app
    from .db import db_app
    from .incidents import register
    from .operate import prune  # also adds cancel, logs, rerun and delete to runs_app
    from .runs import runs_app
    from .sensor_group import sensor_app
    from .status import status

    app.command("prune", cls=RunsenseCommand)(prune)
    app.command("status", cls=RunsenseCommand)(status)

    app.add_typer(runs_app, name="runs")
    app.add_typer(sensor_app, name="sensor")
    app.add_typer(db_app, name="db")
    register(app)


_register_groups()
