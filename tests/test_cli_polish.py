"""Issue 14, "CLI polish", through Typer's CliRunner: what a user sees and what is stored.

The items that need a real process (a pipe, Ctrl-C, an ASCII-only terminal, `init` then `run`)
are in test_cli_processes.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from runsense_cli.cli import app
from tests.helpers import PROJECT

runner = CliRunner()
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def proj(project) -> Path:
    return project(PROJECT)


def rs(proj: Path | None, *args: str, env: dict[str, str] | None = None):
    return runner.invoke(app, [*(["-f", str(proj)] if proj else []), *args], env=env)


def ok(result) -> str:
    assert result.exit_code == 0, result.output
    return result.stdout


def as_json(result):
    import json

    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def error_line(result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


# -- 1. -v prints each traceback once ----------------------------------------------------


def test_verbose_prints_the_traceback_once(project):
    broken = project("import nothing_here_at_all\n")
    loud = runner.invoke(app, ["-f", str(broken), "-v", "jobs"])
    assert loud.exit_code == 2
    # The import error's traceback (the cause), then the ProjectError's: never the cause again.
    assert loud.stderr.count("    import nothing_here_at_all\n") == 1
    assert loud.stderr.count("Traceback (most recent call last)") == 2
    assert "Caused by" not in loud.stderr
    assert loud.stderr.strip().splitlines()[-1].startswith("Error: importing")


# -- 2. global options before or after the command ---------------------------------------


@pytest.mark.parametrize("where", ["before", "after"])
def test_home_and_file_are_accepted_before_or_after_the_command(proj, tmp_path, home, where):
    other = str(tmp_path / "other-home")
    globals_ = ["-f", str(proj), "--home", other]

    def call(*command: str):
        args = [*globals_, *command] if where == "before" else [*command, *globals_]
        return runner.invoke(app, args)

    ok(call("run", "ok_job"))
    [run] = as_json(call("runs", "list", "--json"))
    assert run["job_name"] == "ok_job"
    assert not home.exists()  # --home, wherever it stood, won over $RUNSENSE_HOME
    assert (tmp_path / "other-home" / "runsense.db").exists()


def test_verbose_after_the_command_shows_the_traceback(project):
    broken = project("import nothing_here_at_all\n")
    loud = runner.invoke(app, ["jobs", "-f", str(broken), "-v"])
    assert loud.exit_code == 2 and "Traceback" in loud.stderr


def test_file_and_module_on_either_side_are_still_one_or_the_other(proj):
    line = error_line(runner.invoke(app, ["-m", "some.module", "jobs", "-f", str(proj)]))
    assert "give -f/--file or -m/--module, not both" in line


def _commands() -> list[tuple[str, ...]]:
    """Every command path, groups included: (), ("run",), ("runs",), ("runs", "list"), ..."""
    paths: list[tuple[str, ...]] = []

    def walk(command, path: tuple[str, ...]) -> None:
        paths.append(path)
        for name, sub in getattr(command, "commands", {}).items():
            if not sub.hidden:
                walk(sub, (*path, name))

    walk(get_command(app), ())
    return paths


@pytest.mark.parametrize(
    "path",
    [p for p in _commands() if p not in ((), ("runs",), ("sensor",), ("db",))],
    ids=" ".join,
)
def test_every_command_takes_the_global_options_after_it(path, tmp_path, proj):
    result = runner.invoke(app, [*path, "-f", str(proj), "--home", str(tmp_path), "-v", "--help"])
    assert result.exit_code == 0, result.output
    assert "Global options" in result.stdout


# -- 3. failures name the sensor; retry --now ----------------------------------------------

SLOW_RETRY = """
import os
from runsense_cli import Definitions, job, op, run_failure_sensor

@op
def boom():
    raise ValueError("boom")

@job
def bad_job():
    boom()

@run_failure_sensor(max_retries=3, retry_delay_seconds=3600)
def slow_retry(context):
    if os.environ.get("RUNSENSE_TEST_FIXED"):
        return None
    raise RuntimeError("not yet")

@run_failure_sensor(max_retries=0)
def parks_at_once(context):
    raise RuntimeError("parked")

defs = Definitions(jobs=[bad_job], sensors=[slow_retry, parks_at_once])
"""


def test_failures_hint_names_each_sensor_with_the_right_flag(project):
    proj = project(SLOW_RETRY)
    ok(rs(proj, "sensor", "start", "--all"))
    rs(proj, "run", "bad_job")
    assert rs(proj, "sensor", "tick").exit_code == 1
    out = ok(rs(proj, "sensor", "failures"))
    assert "sensor retry NAME" not in out
    assert "runsense sensor retry slow_retry --now" in out  # RETRYING: skip the back-off
    assert "runsense sensor retry parks_at_once --all" in out  # DEAD only


def test_retry_now_makes_a_retrying_reaction_due_and_the_next_tick_runs_it(project):
    proj = project(SLOW_RETRY)
    ok(rs(proj, "sensor", "start", "slow_retry"))
    rs(proj, "run", "bad_job")
    assert rs(proj, "sensor", "tick", "slow_retry").exit_code == 1
    [waiting] = as_json(rs(proj, "sensor", "failures", "--json"))
    assert waiting["state"] == "RETRYING" and waiting["attempts"] == 1
    fixed = {"RUNSENSE_TEST_FIXED": "1"}
    # Without --now the back-off holds: an hour away, the tick does not retry it.
    assert "0 reaction(s)" in ok(rs(proj, "sensor", "tick", "slow_retry", env=fixed))
    out = ok(rs(proj, "sensor", "retry", "slow_retry", "--now"))
    assert "Made 1 reaction(s) of slow_retry due now (0 parked, 1 retrying)" in out
    assert "runsense sensor tick slow_retry" in out
    [due] = as_json(rs(proj, "sensor", "failures", "--json"))
    assert due["attempts"] == 1  # a RETRYING reaction keeps its count
    assert "1 reaction(s)" in ok(rs(proj, "sensor", "tick", "slow_retry", env=fixed))
    assert as_json(rs(proj, "sensor", "failures", "--json")) == []


def test_retry_now_with_event_and_with_all_also_requeues_parked_ones(project):
    proj = project(SLOW_RETRY)
    ok(rs(proj, "sensor", "start", "--all"))
    rs(proj, "run", "bad_job")
    rs(proj, "sensor", "tick")
    failures = {f["sensor"]: f for f in as_json(rs(proj, "sensor", "failures", "--json"))}
    parked = failures["parks_at_once"]
    assert parked["state"] == "DEAD"
    out = ok(
        rs(proj, "sensor", "retry", "parks_at_once", "--event", str(parked["event_id"]), "--now")
    )
    assert "(1 parked, 0 retrying)" in out
    again = {f["sensor"]: f for f in as_json(rs(proj, "sensor", "failures", "--json"))}
    assert again["parks_at_once"]["state"] == "RETRYING"
    assert "(0 parked, 1 retrying)" in ok(
        rs(proj, "sensor", "retry", "slow_retry", "--all", "--now")
    )
    assert "give --all or --event ID, not both" in error_line(
        rs(proj, "sensor", "retry", "slow_retry", "--all", "--event", "1")
    )


def test_retry_says_when_the_sensor_is_stopped(project):
    proj = project(SLOW_RETRY)
    ok(rs(proj, "sensor", "start", "parks_at_once"))
    rs(proj, "run", "bad_job")
    rs(proj, "sensor", "tick")
    ok(rs(proj, "sensor", "stop", "parks_at_once"))
    out = ok(rs(proj, "sensor", "retry", "parks_at_once", "--all"))
    assert "parks_at_once is stopped: start it" in out


# -- 5. --status and --job ---------------------------------------------------------------------


@pytest.mark.parametrize("typed", ["failure", "FAILURE", "Failed", "failed"])
def test_status_is_case_insensitive_and_takes_the_past_tense(proj, typed):
    rs(proj, "run", "ok_job")
    rs(proj, "run", "bad_job")
    [run] = as_json(rs(proj, "runs", "list", "--status", typed, "--json"))
    assert run["job_name"] == "bad_job"


def test_a_status_typo_gets_did_you_mean(proj):
    line = error_line(rs(proj, "runs", "list", "--status", "faild"))
    assert line == "Error: unknown status 'faild' (did you mean FAILURE?)"


def test_an_unknown_job_is_named_with_did_you_mean_from_the_project(proj):
    rs(proj, "run", "ok_job")
    line = error_line(rs(proj, "runs", "list", "--job", "ok_jb"))
    assert "unknown job 'ok_jb'" in line and "did you mean 'ok_job'" in line
    assert "No runs yet" not in rs(proj, "runs", "list", "--job", "ok_jb").output
    # a job of the project without runs is not an error
    assert "No runs of bad_job." in ok(rs(proj, "runs", "list", "--job", "bad_job"))
    assert as_json(rs(proj, "runs", "list", "--job", "bad_job", "--json")) == []


def test_without_a_project_the_job_is_checked_against_the_database(proj, tmp_path, monkeypatch):
    rs(proj, "run", "ok_job")
    elsewhere = tmp_path / "no-project-here"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert len(as_json(rs(None, "runs", "list", "--job", "ok_job", "--json"))) == 1
    line = error_line(rs(None, "runs", "list", "--job", "ok_jbo"))
    assert "unknown job 'ok_jbo'" in line and "did you mean 'ok_job'" in line


# -- 8. sensor start warns about missing environment variables -------------------------------

SLACK_PROJECT = """
from runsense_cli import Definitions, EnvVar, job, make_slack_on_run_failure_sensor, op

@op
def noop():
    pass

@job
def a_job():
    noop()

alerts = make_slack_on_run_failure_sensor(channel="#alerts", slack_token=EnvVar("RS_TEST_SLACK_TOKEN"))
literal = make_slack_on_run_failure_sensor(channel="#alerts", slack_token="xoxb-literal", name="literal")

defs = Definitions(jobs=[a_job], sensors=[alerts, literal])
"""


def test_sensor_start_warns_once_per_missing_variable(project, monkeypatch):
    proj = project(SLACK_PROJECT)
    monkeypatch.delenv("RS_TEST_SLACK_TOKEN", raising=False)
    result = rs(proj, "sensor", "start", "--all")
    assert "Started slack_on_run_failure" in ok(result)
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("No runsense daemon is running")  # SPEC §12: said once
    [warning] = lines[1:]
    assert warning.startswith("warning: $RS_TEST_SLACK_TOKEN is not set: slack_on_run_failure's")
    assert "literal" not in warning
    ok(rs(proj, "sensor", "stop", "--all"))
    monkeypatch.setenv("RS_TEST_SLACK_TOKEN", "xoxb-set")
    quiet = rs(proj, "sensor", "start", "slack_on_run_failure")
    assert ok(quiet) and quiet.stderr.startswith("No runsense daemon is running")
    assert quiet.stderr.count("\n") == 1


# -- 9. runs show answers "did my alert go out?" ---------------------------------------------


def test_runs_show_lists_reactions_and_requested_runs(proj):
    ok(rs(proj, "sensor", "start", "report_status_sensor"))
    ok(rs(proj, "run", "ok_job"))
    ok(rs(proj, "sensor", "tick"))
    runs = as_json(rs(proj, "runs", "list", "--json"))
    requested, monitored = runs
    document = as_json(rs(proj, "runs", "show", monitored["run_id"], "--json"))
    [reaction] = document["reactions"]
    assert reaction["sensor"] == "report_status_sensor" and reaction["state"] == "SUCCESS"
    assert reaction["attempts"] == 1 and reaction["run_ids"] == [requested["run_id"]]
    [child] = document["requested_runs"]
    assert child["run_id"] == requested["run_id"] and child["status"] == "SUCCESS"
    assert child["parent_run_id"] == monitored["run_id"]
    out = ok(rs(proj, "runs", "show", monitored["run_id"][:8]))
    assert "Sensor reactions" in out and "report_status_sensor" in out
    assert f"requested {requested['run_id'][:8]}" in out
    assert "Runs requested by sensors" in out and "status_reporting_job" in out
    # the requested run itself: skipped by the sensor, with its reason; it requested nothing
    ok(rs(proj, "sensor", "tick"))
    child_doc = as_json(rs(proj, "runs", "show", requested["run_id"], "--json"))
    assert child_doc["requested_runs"] == []
    assert (
        child_doc["reactions"][0]["skip_message"] == "Don't report status of status_reporting_job"
    )


def test_runs_show_says_a_failed_reaction_and_why(proj):
    ok(rs(proj, "sensor", "start", "always_raises"))
    rs(proj, "run", "bad_job")
    rs(proj, "sensor", "tick")
    [run] = as_json(rs(proj, "runs", "list", "--json"))
    out = ok(rs(proj, "runs", "show", run["run_id"]))
    row = next(line for line in out.splitlines() if "always_raises" in line)
    assert "DEAD" in row and "RuntimeError: sensor broke" in row
    [reaction] = as_json(rs(proj, "runs", "show", run["run_id"], "--json"))["reactions"]
    assert reaction["state"] == "DEAD" and "Traceback" in reaction["error"]


def test_runs_show_says_when_no_sensor_reacted(proj):
    rs(proj, "run", "ok_job")
    [run] = as_json(rs(proj, "runs", "list", "--json"))
    assert "No sensor has reacted to this run yet" in ok(rs(proj, "runs", "show", run["run_id"]))
    document = as_json(rs(proj, "runs", "show", run["run_id"], "--json"))
    assert document["reactions"] == [] and document["requested_runs"] == []


# -- 7. a display that fails never stops a run --------------------------------------------------


def test_a_failing_progress_display_does_not_stop_the_run(proj, home):
    from runsense_cli.execution import execute_in_process, execute_run, start_run
    from runsense_cli.project import find_project, load_project
    from runsense_cli.runs import RunStatus
    from runsense_cli.storage import open_storage

    definitions = load_project(find_project(str(proj)))
    job = definitions.get_job("ok_job")
    execute_in_process(job)  # creates the home
    with open_storage() as storage:
        run = start_run(storage, job, launched_by="test")

        def display(report):
            raise UnicodeEncodeError("ascii", "✔", 0, 1, "ordinal not in range(128)")

        result = execute_run(storage, job, run, on_step=display)
        assert result.success and storage.get_run(run.run_id).status == RunStatus.SUCCESS


# -- 10. help: examples and natural placeholders; README lists every command -----------------


@pytest.mark.parametrize("path", _commands(), ids=lambda p: " ".join(p) or "runsense")
def test_help_has_examples_and_natural_placeholders(path):
    result = runner.invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "Examples:" in text, f"`{' '.join(path)} --help` has no example"
    examples = re.findall(r"^ +(runsense .+)$", text.split("Examples:")[1], re.M)
    assert 1 <= len(examples) <= 3, text
    rest = "\n".join(line for line in text.splitlines() if not line.strip().startswith("runsense "))
    for bad in ("<int", "<str", "<path", "<float", "{", "}", "INTEGER", "TEXT", "FLOAT RANGE"):
        assert bad not in rest, f"`{' '.join(path)} --help` shows {bad!r}:\n{text}"


def test_every_command_is_in_the_readme():
    readme = (REPO / "README.md").read_text()
    block = readme.split("## Commands", 1)[1].split("```text", 1)[1].split("```", 1)[0]
    listed = [line.strip() for line in block.splitlines()]
    for path in _commands():
        if path and path not in (("runs",), ("sensor",)):
            name = " ".join(path)
            assert any(line == name or line.startswith(name + " ") for line in listed), name
    for needle in ("runsense init", "--now", "Examples:"):
        assert needle in readme, needle
