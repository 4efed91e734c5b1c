"""One clear line for every problem the user can fix; a traceback only with --verbose.

Shared by the Typer app (cli/errors.py) and the fast path (cli/fast.py); imports no Typer.
"""

from __future__ import annotations

import sys

from ..errors import DamagedRowError
from .state import CliState


def report(state: CliState | None, exc: BaseException) -> None:
    """Write `Error: ...` to stderr (the traceback first with -v) and close the storage."""
    if isinstance(exc, DamagedRowError) and state is not None and state.opened is not None:
        exc = exc.located(state.opened.description)
    if state is not None and state.verbose:
        import traceback

        # print_exception already tells the whole chain ("The above exception was the direct
        # cause..."), so the cause is never printed a second time.
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    sys.stderr.write(f"Error: {exc}\n")
    if state is not None:
        state.close()
