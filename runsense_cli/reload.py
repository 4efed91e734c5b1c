"""The daemon reloads the project when its files change (SPEC §12): new, changed and removed
sensors take effect without a restart, and so do jobs: runs launched after a reload are forked
with the new code (a cold run worker imports the project afresh anyway). A reload that fails (a syntax error) keeps the old code and says why once.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from typing import Any

from .definitions import Definitions
from .status import code_fingerprint

CHECK_EVERY_S = 1.0  # files are compared at most this often: a change shows within 2 s


class CodeWatcher:
    """Tells when the project's Python files change (a stat of each file, no reading)."""

    def __init__(self, directory: str, every: float = CHECK_EVERY_S) -> None:
        self.directory = directory
        self.every = every
        self.fingerprint = code_fingerprint(directory)
        self._checked = time.monotonic()

    def changed(self) -> bool:
        now = time.monotonic()
        if now - self._checked < self.every:
            return False
        self._checked = now
        fingerprint = code_fingerprint(self.directory)
        if fingerprint == self.fingerprint:
            return False
        self.fingerprint = fingerprint
        return True


def reload_definitions(origin: dict[str, Any]) -> Definitions:
    """Import the project again from its files: every module loaded from the project's directory
    is forgotten first (runsense's own and installed packages excepted), so edits to helper
    modules count too. Raises ProjectError as a first load does."""
    from .project import ProjectRef, load_project

    ref = ProjectRef.from_origin(origin)
    root = os.path.realpath(ref.directory) + os.sep
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if not path or name == "runsense_cli" or name.startswith("runsense_cli."):
            continue
        real = os.path.realpath(path)
        if real.startswith(root) and "site-packages" not in real:
            del sys.modules[name]
    # What a project prints at import goes to stderr, as on a first load by a command.
    with contextlib.redirect_stdout(sys.stderr):
        return load_project(ref)
