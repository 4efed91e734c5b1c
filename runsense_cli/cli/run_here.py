"""Creating a run and executing it here, or queueing it: `runsense run` and `runs rerun`."""

from __future__ import annotations

import contextlib
import sys
from typing import Any

import typer


def execute_here(
    state: Any,
    job: Any,
    run_config: dict[str, Any],
    tags: dict[str, str],
    *,
    queue: bool,
    as_json: bool,
    launched_by: str = "cli",
    **lineage: Any,
) -> None:
    """Create a run of `job` and run it here (or queue it), printing as `runsense run` does; also
    `runs rerun`. Exits with the run's outcome."""
    from ..cancel import cancel_on_sigterm
    from ..execution import execute_run, start_run
    from . import render
    from .run_view import RunPrinter

    storage = state.storage
    state.register_sensors()  # first sight of RUNNING-by-default sensors starts them before this run
    record = start_run(
        storage,
        job,
        run_config,
        tags,
        launched_by=launched_by,
        origin=state.project_ref.to_origin(),
        queue=queue,
        **lineage,
    )
    if queue:
        if as_json:
            render.print_json(render.run_json(record))
        else:
            render.console().print(record.run_id, markup=False, soft_wrap=True)
        return
    printer = RunPrinter(record, verbose=state.verbose, stderr=as_json)
    printer.begin()
    # With --json, stdout holds only the document: what ops print goes to stderr.
    quiet = contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext()
    try:
        with quiet, cancel_on_sigterm():  # `runs cancel` stops a foreground run the same way
            result = execute_run(storage, job, record, on_step=printer.step)
    except KeyboardInterrupt as exc:
        # execute_run has stored the run CANCELED; say so, and exit as shells expect of Ctrl-C.
        final = storage.get_run(record.run_id)
        printer.canceled(final, "canceled" if hasattr(exc, "reason") else "interrupted")
        if as_json:
            render.print_json(render.run_json(final))
        raise typer.Exit(1 if hasattr(exc, "reason") else 130) from None
    printer.end(result)
    if as_json:
        render.print_json(render.run_json(result.run))
    raise typer.Exit(0 if result.success else 1)
