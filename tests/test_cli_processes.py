"""Issue 14, "CLI polish", through real processes: a pipe into `python3 -m json.tool`, Ctrl-C
during a run, an ASCII-only output encoding, and `runsense init` followed by `run` and `tick`."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.processes import RUNSENSE_SCRIPT, env_for, query, stop, wait_until

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def runsense(env: dict[str, str], *args: str, cwd: Path = REPO, timeout: float = 60):
    return subprocess.run(
        [*RUNSENSE_SCRIPT, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def env(home: Path) -> dict[str, str]:
    environment = env_for(home)
    for name in ("SLACK_BOT_TOKEN", "NO_COLOR", "FORCE_COLOR", "PYTHONPATH"):
        environment.pop(name, None)
    return environment


# -- 4. sensor preview pipes into json.tool ----------------------------------------------------


def test_slack_preview_pipes_into_json_tool(env):
    """The sample project's Slack sensor, previewed against a failed run: stdout is the message
    alone, so `| python3 -m json.tool` parses it; the header and warnings go to stderr."""
    assert runsense(env, "run", "failing_job").returncode == 1
    [(run_id,)] = query(Path(env["RUNSENSE_HOME"]), "SELECT run_id FROM runs")
    preview = subprocess.Popen(
        [*RUNSENSE_SCRIPT, "sensor", "preview", "slack_on_run_failure", "--run", run_id[:8]],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    tool = subprocess.run(
        [sys.executable, "-m", "json.tool"],
        stdin=preview.stdout,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert preview.stdout is not None
    preview.stdout.close()
    assert preview.wait(timeout=60) == 0
    assert tool.returncode == 0, tool.stderr
    message = json.loads(tool.stdout)
    assert message["channel"] == "#alerts" and run_id.split("-")[0] in json.dumps(message)
    assert "would post this to Slack" in preview.stderr.read().decode()  # type: ignore[union-attr]


# -- 6. Ctrl-C during `runsense run` -------------------------------------------------------------

SLEEPY = """
import time
from runsense_cli import Definitions, job, op

@op
def nap():
    time.sleep(60)

@job
def sleepy_job():
    nap()

defs = Definitions(jobs=[sleepy_job])
"""


def test_ctrl_c_during_a_run_says_canceled_with_the_run_id_and_exits_130(env, tmp_path, home):
    proj = tmp_path / "sleepy_defs.py"
    proj.write_text(SLEEPY)
    out_path, err_path = tmp_path / "out.txt", tmp_path / "err.txt"
    with open(out_path, "w") as out_file, open(err_path, "w") as err_file:
        process = subprocess.Popen(
            [*RUNSENSE_SCRIPT, "-f", str(proj), "run", "sleepy_job"],
            env=env,
            stdout=out_file,
            stderr=err_file,
            # As from a shell: Ctrl-C raises KeyboardInterrupt, even if this runner ignores it.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
    try:
        wait_until(lambda: "nap" in out_path.read_text(), what="the op started")
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
    finally:
        stop(process)
    out, err = out_path.read_text(), err_path.read_text()
    assert process.returncode == 130, out + err
    [(run_id, status)] = query(home, "SELECT run_id, status FROM runs")
    assert status == "CANCELED"
    last = out.strip().splitlines()[-1]
    assert "CANCELED" in last and "interrupted during op 'nap'" in last and run_id in last
    assert "Traceback" not in out + err and "Aborted" not in out + err


# -- 7. an ASCII-only output encoding -------------------------------------------------------------


def test_ascii_only_output_degrades_and_never_breaks_a_run(env, home):
    ascii_env = {**env, "PYTHONIOENCODING": "ascii", "LANG": "C", "LC_ALL": "C"}
    run = runsense(ascii_env, "run", "etl_job")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "> extract" in run.stdout and "ok load" in run.stdout  # plain markers
    assert "Traceback" not in run.stdout + run.stderr
    [stored] = json.loads(runsense(ascii_env, "runs", "list", "--json").stdout)
    assert stored["status"] == "SUCCESS"
    failed = runsense(ascii_env, "run", "failing_job")
    assert failed.returncode == 1 and "x flaky_op failed" in failed.stdout
    for command in (["jobs"], ["runs", "list"], ["sensor", "tick"], ["sensor", "list"]):
        result = runsense(ascii_env, *command)
        assert result.returncode == 0, (command, result.stdout + result.stderr)
        assert "Traceback" not in result.stderr, command
    assert "extract -> transform -> load" in runsense(ascii_env, "jobs").stdout


# -- 11. runsense init ---------------------------------------------------------------------------


def test_init_then_run_then_tick_work_at_once(env, tmp_path, home):
    """Given an empty directory, when `runsense init DIR` writes a project, then `run` and
    `sensor start` + `sensor tick` work in DIR with no flag, and a second init refuses."""
    directory = tmp_path / "new_project"
    init = runsense(env, "init", str(directory), cwd=tmp_path)
    assert init.returncode == 0, init.stderr
    assert sorted(p.name for p in directory.iterdir()) == ["defs.py", "pyproject.toml"]
    assert 'module = "defs"' in (directory / "pyproject.toml").read_text()
    assert f"cd {directory}" in init.stdout
    run = runsense(env, "run", "hello_job", cwd=directory)
    assert run.returncode == 0, run.stdout + run.stderr
    start = runsense(env, "sensor", "start", "on_success", cwd=directory)
    assert start.returncode == 0, start.stderr
    tick = runsense(env, "sensor", "tick", cwd=directory)
    assert tick.returncode == 0, tick.stdout + tick.stderr
    assert "on_success: SUCCESS" in tick.stdout and "1 reaction(s)" in tick.stdout
    assert "succeeded" in tick.stderr  # the sensor's context.log
    before = (directory / "defs.py").read_text()
    (directory / "defs.py").write_text(before + "# mine\n")
    again = runsense(env, "init", cwd=directory)
    assert again.returncode == 2 and again.stdout == ""
    [line] = again.stderr.strip().splitlines()
    assert line.startswith("Error: ") and "defs.py, pyproject.toml" in line
    assert (directory / "defs.py").read_text() == before + "# mine\n"  # never overwritten


def test_init_beside_another_tools_pyproject_writes_runsense_toml(env, tmp_path):
    directory = tmp_path / "existing"
    directory.mkdir()
    pyproject = "[tool.black]\nline-length = 100\n"
    (directory / "pyproject.toml").write_text(pyproject)
    init = runsense(env, "init", cwd=directory)
    assert init.returncode == 0, init.stderr
    assert (directory / "pyproject.toml").read_text() == pyproject  # untouched
    assert 'module = "defs"' in (directory / "runsense.toml").read_text()
    assert "cd " not in init.stdout  # already there
    run = runsense(env, "run", "hello_job", cwd=directory)
    assert run.returncode == 0, run.stdout + run.stderr


def test_init_refuses_where_a_runsense_project_already_is(env, tmp_path):
    directory = tmp_path / "configured"
    directory.mkdir()
    (directory / "pyproject.toml").write_text('[tool.runsense]\nmodule = "mine"\n')
    again = runsense(env, "init", cwd=directory)
    assert again.returncode == 2
    assert "already has pyproject.toml; init never overwrites a file" in again.stderr
    assert sorted(p.name for p in directory.iterdir()) == ["pyproject.toml"]
