"""Project settings: `[tool.runsense]` in pyproject.toml or the keys of runsense.toml.

Flags win over settings, settings over defaults. An unknown key or a value of the wrong type is
one clear line, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ProjectError, RunsenseError

# key: (type, check, what it takes)
KNOWN: dict[str, tuple[type | tuple[type, ...], str]] = {
    "module": (str, "the module that holds your Definitions"),
    "database_url": (str, "a postgresql:// or sqlite:/// URL"),
    "interval": ((int, float), "seconds between daemon passes, > 0"),
    "max_concurrent_runs": (int, "run workers at most at once on one machine, >= 1"),
    "runs_per_worker": (int, "runs one warm worker process runs before a fresh one, >= 1"),
    "heartbeat_timeout": (
        (int, float),
        "seconds without a heartbeat before a run is failed, >= 30 (workers beat every 10 s)",
    ),
    "sensor_timeout": (
        (int, float),
        "seconds one call of a sensor function may take before its process is stopped, > 0",
    ),
    "retention": (str, 'an age such as "30d" or "12h": the daemon prunes older history hourly'),
}


@dataclass(frozen=True)
class Settings:
    values: dict[str, Any]
    source: Path | None = None

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)


def find_settings(cwd: str | os.PathLike[str] | None = None) -> Settings:
    """The settings of the nearest project file upward from `cwd` (empty when there is none)."""
    from .project import read_toml

    here = Path(cwd or os.getcwd()).resolve()
    for directory in (here, *here.parents):
        pyproject = directory / "pyproject.toml"
        if pyproject.is_file():
            section = read_toml(pyproject).get("tool", {}).get("runsense")
            if section is not None:
                return Settings(check_settings(section, pyproject, "[tool.runsense]"), pyproject)
        runsense_toml = directory / "runsense.toml"
        if runsense_toml.is_file():
            return Settings(
                check_settings(read_toml(runsense_toml), runsense_toml, ""), runsense_toml
            )
    return Settings({})


def check_settings(values: Any, source: Path, section: str) -> dict[str, Any]:
    where = f"{source}{' ' + section if section else ''}"
    if not isinstance(values, dict):
        raise ProjectError(f"{where} is not a table of settings")
    for key, value in values.items():
        if key not in KNOWN:
            known = ", ".join(sorted(KNOWN))
            raise ProjectError(f"{where}: unknown setting '{key}'", f"known settings: {known}")
        kind, what = KNOWN[key]
        ok = isinstance(value, kind) and not isinstance(value, bool)
        if ok and key in ("interval", "sensor_timeout"):
            ok = value > 0
        if ok and key == "heartbeat_timeout":
            ok = value >= 30
        if ok and key in ("max_concurrent_runs", "runs_per_worker"):
            ok = value >= 1
        if ok and key == "retention":
            from .operations import parse_age

            try:
                parse_age(value)
            except RunsenseError:
                ok = False
        if not ok:
            raise ProjectError(f"{where}: {key} = {value!r} is not valid", f"{key} takes {what}")
    return dict(values)
