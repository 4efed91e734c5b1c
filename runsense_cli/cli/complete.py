"""Shell completion (Typer `autocompletion=`): job and sensor names, run ids and statuses.

Completion runs on every Tab press, so it reads only what it needs, never writes, and answers
nothing rather than an error when the project or the database cannot be read.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any


def _definitions():  # type: ignore[no-untyped-def]
    from ..project import find_project, load_project

    with contextlib.redirect_stdout(io.StringIO()):  # a project printing at import breaks Tab
        return load_project(find_project())


def job_names(incomplete: str) -> list[str]:
    try:
        return [name for name in _definitions().jobs if name.startswith(incomplete)]
    except BaseException:
        return []


def sensor_names(incomplete: str) -> list[str]:
    try:
        return [name for name in _definitions().sensors if name.startswith(incomplete)]
    except BaseException:
        return []


def run_ids(incomplete: str) -> list[str]:
    try:
        from ..storage import open_storage

        with open_storage(create=False) as storage:
            runs = storage.list_runs(limit=200)
        return [run.run_id for run in runs if run.run_id.startswith(incomplete.lower())]
    except BaseException:
        return []


def statuses(incomplete: str) -> list[str]:
    from ..runs import RunStatus

    # In the case being typed: shells filter completions by prefix, and any case is accepted.
    lower = incomplete.islower()
    values = [s.value.lower() if lower else s.value for s in RunStatus]
    return [value for value in values if value.lower().startswith(incomplete.lower())]


def sensor_arg(metavar: str, help: str) -> Any:
    """A sensor name argument (NAME or NAME...) that completes from the project's sensors."""
    import typer

    return typer.Argument(metavar=metavar, help=help, autocompletion=sensor_names)
