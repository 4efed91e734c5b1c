"""Where runsense keeps its state: one directory, one SQLite file."""

from __future__ import annotations

import os
from pathlib import Path

DB_FILENAME = "runsense.db"


def resolve_home(home: str | os.PathLike[str] | None = None) -> Path:
    """`--home` wins, then `RUNSENSE_HOME`, then the platform's user data directory."""
    if home:
        return Path(home).expanduser()
    if env := os.environ.get("RUNSENSE_HOME"):
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("runsense"))


def database_path(home: str | os.PathLike[str] | None = None) -> Path:
    return resolve_home(home) / DB_FILENAME
