"""Every test gets its own runsense home in a temp dir, so none can touch real data."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The runsense home for this test (RUNSENSE_HOME), and a fixed terminal width for rich."""
    home = tmp_path / "home"
    monkeypatch.setenv("RUNSENSE_HOME", str(home))
    monkeypatch.setenv("COLUMNS", "160")
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.delenv("RUNSENSE_SLACK_BASE_URL", raising=False)
    return home


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Write a user module `defs.py` into a fresh project dir and return a writer for it.

    The module name is unique per test so imports never leak between tests in one process.
    """
    directory = tmp_path / "proj"
    directory.mkdir()
    counter = {"n": 0}

    def write(source: str, name: str | None = None) -> Path:
        counter["n"] += 1
        module = name or f"defs_{os.getpid()}_{id(directory)}_{counter['n']}"
        path = directory / f"{module}.py"
        path.write_text(source)
        sys.modules.pop(module, None)
        return path

    return write
