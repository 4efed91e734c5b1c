"""`runsense runs list`: runs newest first, as a table, JSON, or one line when there are none.

No Typer here: the fast path (cli/fast.py) lists runs without importing it.
"""

from __future__ import annotations

import sys

from ..errors import RunsenseError
from ..runs import parse_status
from ..text import clean
from . import render
from .state import CliState


def list_runs(
    state: CliState, job: str | None, status: str | None, limit: int, as_json: bool
) -> None:
    """`limit` 0 means all."""
    wanted = parse_status(status) if status is not None else None
    # clean(): an argument that is not UTF-8 (surrogate-escaped) cannot be a query parameter.
    runs = state.reader.list_runs(clean(job) if job else job, wanted, limit or None)
    if job is not None and not runs:
        _check_job(state, job)
    if as_json:
        render.print_json([render.run_json(run) for run in runs])
        return
    from .plain import LineWriter, table_text  # piped, neither needs rich

    if runs:
        text = table_text(render.RUNS_HEADERS, [render.runs_cells(run) for run in runs])
        if text is None:
            render.console().print(render.runs_table(runs))
        else:
            sys.stdout.write(text)
        return

    if job is None and wanted is None:
        LineWriter().print(("No runs yet. Start one with: runsense run JOB", None))
    else:
        which = " ".join(
            part
            for part in (
                f"of {job}" if job else "",
                f"with status {wanted.value}" if wanted else "",
            )
            if part
        )
        LineWriter().print((f"No runs {which}.", None))


def _check_job(state: CliState, job: str) -> None:
    """An unknown --job is an error naming it: checked against the project's jobs, or the
    jobs seen in the database when no project can be loaded here."""
    from ..errors import ProjectError, suggest

    try:
        known = list(state.definitions.jobs)
        where = "`runsense jobs` lists them"
    except ProjectError:
        known = state.reader.job_names()
        where = "`runsense runs list` shows the jobs that have runs"
    if job not in known:
        raise RunsenseError(f"unknown job '{job}'", suggest(job, known) or where)
