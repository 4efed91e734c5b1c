"""`runsense init`: a minimal project that runs and reacts at once, written without overwriting."""

from __future__ import annotations

from pathlib import Path

from .errors import RunsenseError

MODULE = "defs"

DEFS_PY = '''\
"""A runsense project: jobs made of ops, and run status sensors that react to how runs end.

Try it:  runsense run hello_job && runsense sensor tick && runsense runs list
"""

from runsense_cli import (
    DagsterRunStatus,
    DefaultSensorStatus,
    Definitions,
    job,
    op,
    run_status_sensor,
)


@op
def say_hello(context) -> str:
    context.log.info("hello from runsense")
    return "hello"


@job(description="A one-op job: replace it with your own.")
def hello_job():
    say_hello()


# RUNNING by default, so it reacts from the first run on; return a RunRequest to launch a job,
# or use run_failure_sensor / make_slack_on_run_failure_sensor to hear about failures.
@run_status_sensor(
    run_status=DagsterRunStatus.SUCCESS, default_status=DefaultSensorStatus.RUNNING
)
def on_success(context):
    run = context.dagster_run
    context.log.info(f"run {run.run_id[:8]} of {run.job_name} succeeded")


defs = Definitions(jobs=[hello_job], sensors=[on_success])
'''

PYPROJECT_TOML = f"""\
[tool.runsense]
module = "{MODULE}"
"""

RUNSENSE_TOML = f"""\
# Where runsense finds this project's Definitions (pyproject.toml is left as it was).
module = "{MODULE}"
"""


def plan_project(directory: Path) -> dict[Path, str]:
    """The files `init` writes: `defs.py`, and the setting in a new `pyproject.toml`, or in
    `runsense.toml` when a `pyproject.toml` that does not name a runsense module already exists
    (it is never edited)."""
    files = {directory / f"{MODULE}.py": DEFS_PY}
    pyproject = directory / "pyproject.toml"
    runsense_toml = directory / "runsense.toml"
    # An existing runsense.toml, or a pyproject.toml that names a module, is a project already:
    # planning to write that file makes init refuse.
    if runsense_toml.exists() or (pyproject.exists() and not _names_a_module(pyproject)):
        files[runsense_toml] = RUNSENSE_TOML
    else:
        files[pyproject] = PYPROJECT_TOML
    return files


def _names_a_module(pyproject: Path) -> bool:
    from .project import read_toml

    return bool(read_toml(pyproject).get("tool", {}).get("runsense", {}).get("module"))


def init_project(directory: Path) -> list[Path]:
    """Write a minimal project into `directory` (created if missing); never overwrite a file."""
    if directory.exists() and not directory.is_dir():
        raise RunsenseError(f"{directory} is a file, not a directory", "give a directory to init")
    files = plan_project(directory)
    existing = [path.name for path in files if path.exists() or path.is_symlink()]
    if existing:
        raise RunsenseError(
            f"{'this directory' if str(directory) == '.' else directory} already has "
            f"{', '.join(existing)}; init never overwrites a file",
            "choose an empty directory: runsense init DIR",
        )
    directory.mkdir(parents=True, exist_ok=True)
    for path, text in files.items():
        with open(path, "x", encoding="utf-8") as handle:  # "x": fail rather than overwrite
            handle.write(text)
    return list(files)
