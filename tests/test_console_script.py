"""The installed `runsense` script and `python -m runsense_cli`, as real processes.

They run from the repository root with no flags, so the sample project is found through
`[tool.runsense] module = "sample_project.defs"` in pyproject.toml.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from runsense_cli import __version__
from tests.helpers import PROJECT

REPO = Path(__file__).resolve().parent.parent
SCRIPT = Path(sys.executable).parent / "runsense"

pytestmark = pytest.mark.skipif(not SCRIPT.exists(), reason="runsense is not installed here")


@pytest.fixture
def env(home: Path) -> dict[str, str]:
    environment = dict(os.environ, RUNSENSE_HOME=str(home))
    for name in ("SLACK_BOT_TOKEN", "NO_COLOR", "FORCE_COLOR", "PYTHONPATH"):
        environment.pop(name, None)  # pipes, not a terminal: no colour without being asked
    return environment


def runsense(env: dict[str, str], *args: str, module: bool = False, timeout: float = 60):
    command = [sys.executable, "-m", "runsense_cli"] if module else [str(SCRIPT)]
    return subprocess.run(
        [*command, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_version(env):
    for module in (False, True):
        result = runsense(env, "--version", module=module)
        assert result.returncode == 0 and result.stdout == f"runsense {__version__}\n"


def test_the_sample_project_is_found_from_the_repo_root(env):
    result = runsense(env, "jobs", "--json")
    assert result.returncode == 0, result.stderr
    jobs = {j["name"]: j for j in json.loads(result.stdout)}
    assert {"etl_job", "hello_job", "failing_job", "status_reporting_job"} <= set(jobs)
    assert jobs["etl_job"]["ops"] == ["extract", "transform", "load"]
    assert jobs["etl_job"]["location"] == "sample_project.defs"


def test_run_success_and_failure_exit_codes_and_plain_output(env):
    result = runsense(env, "run", "etl_job")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [line.strip() for line in result.stdout.splitlines()]
    ops = [line.split()[1] for line in lines if line.startswith("✔")]
    assert ops == ["extract", "transform", "load"]
    assert "INFO loaded 3 rows" in result.stdout
    assert "\x1b[" not in result.stdout + result.stderr  # not a terminal: no escape codes
    failed = runsense(env, "run", "failing_job", module=True)
    assert failed.returncode == 1
    assert "✘ flaky_op failed: ValueError: the upstream API returned 503" in failed.stdout
    assert "Traceback" not in failed.stdout + failed.stderr


def test_sample_sensors_react_through_real_workers(env):
    """The sample's sensors start RUNNING on first sight; a tick runs the requested job."""
    assert runsense(env, "run", "hello_job").returncode == 0
    assert runsense(env, "run", "failing_job").returncode == 1
    tick = runsense(env, "sensor", "tick", module=True)
    assert tick.returncode == 0, tick.stdout + tick.stderr
    assert "report_status_sensor: SUCCESS" in tick.stdout
    assert "log_failures: SUCCESS" in tick.stdout
    assert "op flaky_op failed" in tick.stderr  # the sensor's context.log goes to stderr
    runs = json.loads(runsense(env, "runs", "list", "--json").stdout)
    requested = runs[0]
    assert requested["job_name"] == "status_reporting_job" and requested["status"] == "SUCCESS"
    hello = next(r for r in runs if r["job_name"] == "hello_job")
    assert requested["parent_run_id"] == hello["run_id"]
    sensors = json.loads(runsense(env, "sensor", "list", "--json").stdout)
    assert {s["name"]: s["status"] for s in sensors} == {
        "report_status_sensor": "RUNNING",
        "log_failures": "RUNNING",
        "slack_on_run_failure": "STOPPED",  # no SLACK_BOT_TOKEN at its first load
        "slack_incidents": "STOPPED",
        "email_on_run_failure": "STOPPED",
        "log_overdue": "STOPPED",
    }


@pytest.mark.parametrize("module", [False, True], ids=["script", "python -m"])
def test_bad_input_is_one_line_and_exit_2(env, home, module):
    result = runsense(env, "run", "etl_jb", module=module)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("Error: unknown job 'etl_jb' (did you mean 'etl_job'")
    assert len(result.stderr.splitlines()) == 1
    assert not home.exists()


def test_no_project_outside_a_project(env, tmp_path):
    result = subprocess.run(
        [str(SCRIPT), "jobs"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert result.stderr.startswith("Error: no runsense project found here")
    assert len(result.stderr.splitlines()) == 1


def test_tick_waits_for_its_runs_even_when_older_runs_are_queued(env, tmp_path):
    proj = tmp_path / "defs_queued.py"
    proj.write_text(PROJECT)
    rs = ["-f", str(proj)]
    runsense(env, *rs, "sensor", "start", "report_status_sensor")
    runsense(env, *rs, "run", "ok_job")
    runsense(env, *rs, "run", "ok_job")
    # Two requests, room for one worker: one run stays QUEUED for a daemon that is not running.
    first = runsense(env, *rs, "sensor", "tick", "--no-wait", "--max-concurrent-runs", "1")
    assert "1 run(s) stay queued" in first.stdout, first.stdout
    runsense(env, *rs, "run", "ok_job")
    result = runsense(env, *rs, "sensor", "tick", "--max-concurrent-runs", "1", timeout=8)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Running 1 requested run(s)" in result.stdout
