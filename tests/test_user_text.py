"""User text is shown literally (SPEC §13): markup-looking text and invalid UTF-8 in log lines, op
errors, skip reasons, sensor errors, tags, names and descriptions never crash a command, never
leave a run STARTED, and print as written (U+FFFD for bytes that are not UTF-8).

Sensors returning values runsense cannot store (tags as a list, a date in run config,
`SkipReason(404)`) get a failed reaction naming the field; the other sensors carry on.
"""

from __future__ import annotations

import io
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from runsense_cli.cli import app
from runsense_cli.errors import ConfigError, DefinitionError
from runsense_cli.records import ReactionState
from runsense_cli.storage import open_storage

runner = CliRunner()

BAD = b"\xff\xfe".decode("utf-8", "surrogateescape")  # what os.listdir gives for such a name
MARKUP = "wrote [/data/out.csv] [bold]x[/bold] :fire:"
SHOWN_BAD = "\ufffd\ufffd"

PROJECT = f"""
import datetime
from runsense_cli import (
    DagsterRunStatus, DefaultSensorStatus, Definitions, RunRequest, SkipReason, job, op,
    run_status_sensor,
)

BAD = {BAD!r}
MARKUP = {MARKUP!r}

@op
def noisy(context):
    context.log.info(MARKUP)
    context.log.warning("file " + BAD + ".csv")

@job(name="etl[/x]", description="Loads [/data/out.csv] [red]daily[/red]", tags={{"note": "[/x]"}})
def noisy_job():
    noisy()

@op
def broken():
    raise ValueError("cannot read " + BAD + ".csv: " + MARKUP)

@job
def broken_job():
    broken()

@op
def opener():
    path = "/nonexistent-runsense-dir/" + BAD + ".csv"
    try:
        open(path)
    except OSError as exc:
        raise RuntimeError(f"could not load {{path}}") from exc

@job
def opener_job():
    opener()

@op
def target():
    pass

@job
def target_job():
    target()

def sensor(**kwargs):
    return run_status_sensor(
        DagsterRunStatus.SUCCESS, monitored_jobs=[noisy_job],
        default_status=DefaultSensorStatus.RUNNING, **kwargs,
    )

@sensor()
def healthy(context):
    return None

@sensor()
def skips_markup(context):
    return SkipReason(MARKUP + " " + BAD)

@sensor(max_retries=0)
def raises_markup(context):
    raise RuntimeError(MARKUP + " " + BAD)

@sensor(request_job=target_job)
def tags_list(context):
    return RunRequest(tags=["a", "b"])

@sensor(request_job=target_job)
def tag_value_dict(context):
    return RunRequest(tags={{"owner": {{"team": "data"}}}})

@sensor(request_job=target_job)
def date_config(context):
    return RunRequest(run_config={{"ops": {{"target": {{"config": datetime.date(2024, 1, 2)}}}}}})

@sensor(request_job=target_job)
def nan_config(context):
    return RunRequest(run_config={{"ops": {{"target": {{"config": float("nan")}}}}}})

@sensor()
def skip_int(context):
    return SkipReason(404)

@sensor(request_job=target_job)
def job_name_list(context):
    return RunRequest(job_name=["target_job"])

@sensor(request_job=target_job)
def tags_with_markup(context):
    return RunRequest(tags={{"note": MARKUP + " " + BAD}})

defs = Definitions(
    jobs=[noisy_job, broken_job, opener_job, target_job],
    sensors=[healthy, skips_markup, raises_markup, tags_list, tag_value_dict, date_config,
             nan_config, skip_int, job_name_list, tags_with_markup],
)
"""

BAD_RETURNS = {
    "tags_list": "sensor 'tags_list': RunRequest.tags must be a mapping of str to str, got list",
    "tag_value_dict": "sensor 'tag_value_dict': RunRequest.tags['owner']: a tag value must be a "
    "str, got a dict",
    "date_config": "sensor 'date_config': RunRequest.run_config: ops.target.config: a date is not "
    'a JSON value (quote it: "2024-01-02")',
    "nan_config": "sensor 'nan_config': RunRequest.run_config: ops.target.config: nan is not "
    "allowed",
    "skip_int": "sensor 'skip_int' returned SkipReason(404): skip_message must be a str, got int",
    "job_name_list": "sensor 'job_name_list' returned RunRequest(",
}


@pytest.fixture
def defs_file(project):
    return str(project(PROJECT))


def cli(defs_file: str, *args: str):
    """A command that must not crash: no exception escaped, no traceback through runsense (a
    user's own traceback, shown by `runs show`, starts in their code)."""
    result = runner.invoke(app, ["-f", defs_file, *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert "/runsense_cli/" not in result.output, result.output
    return result


def test_log_lines_names_and_descriptions_print_literally(defs_file):
    result = cli(defs_file, "run", "etl[/x]")
    assert result.exit_code == 0, result.output
    assert MARKUP in result.stdout
    assert f"file {SHOWN_BAD}.csv" in result.stdout
    assert "of etl[/x] started" in result.stdout
    [run] = open_storage().list_runs()
    assert run.status.value == "SUCCESS" and run.tags["note"] == "[/x]"

    shown = cli(defs_file, "runs", "show", run.run_id[:8])
    assert shown.exit_code == 0, shown.output
    assert MARKUP in shown.stdout and f"file {SHOWN_BAD}.csv" in shown.stdout
    assert "job: etl[/x]" in shown.stdout and "note=[/x]" in shown.stdout

    listed = cli(defs_file, "runs", "list")
    assert listed.exit_code == 0 and "etl[/x]" in listed.stdout
    unknown = cli(defs_file, "runs", "list", "--job", BAD)  # names no job: one clean line
    assert unknown.exit_code == 2 and "unknown job" in unknown.stderr
    assert "Traceback" not in unknown.stderr
    documents = cli(defs_file, "runs", "show", run.run_id, "--json")
    messages = [e["message"] for e in json.loads(documents.stdout)["events"]]
    assert MARKUP in messages and f"file {SHOWN_BAD}.csv" in messages

    jobs = cli(defs_file, "jobs")
    assert jobs.exit_code == 0
    assert "etl[/x]" in jobs.stdout and "Loads [/data/out.csv] [red]daily[/red]" in jobs.stdout


def test_an_op_error_with_markup_and_invalid_utf8_fails_the_run_and_is_shown(defs_file):
    result = cli(defs_file, "run", "broken_job")
    assert result.exit_code == 1, result.output
    expected = f"ValueError: cannot read {SHOWN_BAD}.csv: {MARKUP}"
    assert expected in result.stdout.replace("\n", "")
    [run] = open_storage().list_runs()
    assert run.status.value == "FAILURE"
    shown = cli(defs_file, "runs", "show", run.run_id)
    assert shown.exit_code == 0 and expected in shown.stdout


def test_an_op_opening_a_file_whose_name_is_not_utf8_fails_cleanly(defs_file):
    result = cli(defs_file, "run", "opener_job")
    assert result.exit_code == 1, result.output
    assert (
        f"RuntimeError: could not load /nonexistent-runsense-dir/{SHOWN_BAD}.csv" in result.stdout
    )
    [run] = open_storage().list_runs()
    assert run.status.value == "FAILURE"
    failure = open_storage().events_for_run(run.run_id)[-1]
    assert failure.error is not None and "FileNotFoundError" in failure.error.stack


def test_sensor_text_is_shown_literally_and_bad_returns_are_failed_reactions(defs_file):
    assert cli(defs_file, "run", "etl[/x]").exit_code == 0
    ticked = cli(defs_file, "sensor", "tick")
    assert ticked.exit_code == 1, ticked.output
    out = ticked.stdout.replace("\n", "")
    assert f"skipped: {MARKUP} {SHOWN_BAD}" in out
    assert f"RuntimeError: {MARKUP} {SHOWN_BAD}" in out
    for message in BAD_RETURNS.values():
        assert message in out, message

    storage = open_storage()
    states = {}
    for name in ("healthy", "skips_markup", "raises_markup", "tags_with_markup", *BAD_RETURNS):
        sensor_id = storage.sensor_state(Path(defs_file).stem, name).sensor_id
        [states[name]] = storage.reactions_for(sensor_id)
    assert states["healthy"].state == ReactionState.SUCCESS
    assert states["skips_markup"].skip_message == f"{MARKUP} {SHOWN_BAD}"
    assert states["raises_markup"].state == ReactionState.DEAD
    for name, message in BAD_RETURNS.items():
        assert states[name].state == ReactionState.DEAD, name
        assert message in states[name].error, (name, states[name].error)
    [requested] = storage.list_runs(job_name="target_job")
    assert requested.tags["note"] == f"{MARKUP} {SHOWN_BAD}"
    assert requested.status.value == "SUCCESS"  # `sensor tick` ran it

    for name in ("skips_markup", "raises_markup", "date_config"):
        ticks = cli(defs_file, "sensor", "ticks", name)
        assert ticks.exit_code == 0, ticks.output
    flat = cli(defs_file, "sensor", "ticks", "skips_markup").stdout.replace("│", "")
    assert "[/data/out.csv]" in "".join(flat.split())
    failures = cli(defs_file, "sensor", "failures")
    assert failures.exit_code == 0, failures.output
    compact = "".join(failures.stdout.replace("│", "").split())
    assert "".join(f"{MARKUP} {SHOWN_BAD}".split()) in compact
    assert json.loads(cli(defs_file, "sensor", "failures", "--json").stdout)
    shown = cli(defs_file, "runs", "show", requested.run_id)
    assert shown.exit_code == 0 and f"note={MARKUP} {SHOWN_BAD}" in shown.stdout


@pytest.fixture
def defs_module(defs_file):
    import importlib.util

    spec = importlib.util.spec_from_file_location("user_text_defs", defs_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_garbage_depth_tag_already_stored_never_crashes_a_tick(defs_module):
    from runsense_cli.evaluation import SensorEvaluator
    from runsense_cli.records import SensorStatus

    storage = open_storage()
    evaluator = SensorEvaluator(storage, defs_module.defs)
    evaluator.register_sensors()
    sensor = defs_module.tags_with_markup
    storage.set_sensor_status(evaluator.state(sensor).sensor_id, SensorStatus.RUNNING)
    for garbage in ("x", "-3", "1e9", "9" * 5000):
        defs_module.noisy_job.execute_in_process(tags={"runsense/depth": garbage})
    result = evaluator.tick(sensor)
    assert len(result.tick.run_ids) == 3  # the three that are not numbers count as depth 0
    depths = [storage.get_run(run_id).tags["runsense/depth"] for run_id in result.tick.run_ids]
    assert depths == ["1", "1", "1"]
    [refused] = [r for r, _ in result.reactions if r.state == ReactionState.DEAD]
    assert "chain-depth limit 20 reached" in refused.error  # a number past any limit


def test_a_run_whose_bookkeeping_fails_still_ends_as_failure(defs_module, monkeypatch):
    from runsense_cli.execution import execute_run, start_run
    from runsense_cli.runs import EventType

    storage = open_storage()
    job = defs_module.target_job
    run = start_run(storage, job, launched_by="cli")
    append = storage.append_event

    def broken_append(run, event_type, *args, **kwargs):
        if event_type == EventType.STEP_SUCCESS:
            raise RuntimeError("the display broke")
        return append(run, event_type, *args, **kwargs)

    monkeypatch.setattr(storage, "append_event", broken_append)
    with pytest.raises(RuntimeError, match="the display broke"):
        execute_run(storage, job, run)
    ended = storage.get_run(run.run_id)
    assert ended.status.value == "FAILURE"
    assert "runsense itself raised RuntimeError: the display broke" in (
        storage.events_for_run(run.run_id)[-1].message
    )


def test_execute_in_process_refuses_tags_and_config_that_are_not_json(defs_module, home):
    job = defs_module.target_job
    with pytest.raises(ConfigError, match="tags must be a mapping of str to str, got list"):
        job.execute_in_process(tags=["a"])
    with pytest.raises(ConfigError, match=r"tags\['k'\]: a tag value must be a str, got a list"):
        job.execute_in_process(tags={"k": [1]})
    with pytest.raises(ConfigError, match="run config: ops.target.config: inf is not allowed"):
        job.execute_in_process(run_config={"ops": {"target": {"config": float("inf")}}})
    assert not (home / "runsense.db").exists()
    with pytest.raises(DefinitionError, match="job 'j': tags must be a mapping"):
        from runsense_cli import job as job_decorator

        job_decorator(name="j", tags=["a"])(lambda: None)


def test_runs_list_json_stays_valid_json_with_a_nan_stored_before_the_check(defs_file, home):
    assert cli(defs_file, "run", "target_job").exit_code == 0
    connection = sqlite3.connect(home / "runsense.db")
    connection.execute("""UPDATE runs SET run_config = '{"x": NaN, "y": [Infinity]}'""")
    connection.commit()
    connection.close()
    listed = cli(defs_file, "runs", "list", "--json")
    assert "NaN" not in listed.stdout and "Infinity" not in listed.stdout
    assert json.loads(listed.stdout)[0]["run_config"] == {"x": None, "y": [None]}


def test_the_daemon_live_view_draws_user_text_literally(defs_module):
    from rich.console import Console
    from rich.live import Live

    from runsense_cli.cli.daemon_view import LiveReporter
    from runsense_cli.evaluation import SensorEvaluator
    from runsense_cli.records import SensorStatus

    storage = open_storage()
    evaluator = SensorEvaluator(storage, defs_module.defs)
    evaluator.register_sensors()
    sensor = defs_module.raises_markup
    storage.set_sensor_status(evaluator.state(sensor).sensor_id, SensorStatus.RUNNING)
    defs_module.noisy_job.execute_in_process()
    screen = io.StringIO()
    reporter = LiveReporter(evaluator)
    reporter.live = Live(console=Console(file=screen, width=400, force_terminal=True))
    reporter.started(os.getpid(), ["raises_markup"])
    reporter.tick(evaluator.tick(sensor))
    reporter._draw()
    reporter.stopping()
    assert MARKUP in screen.getvalue() and SHOWN_BAD in screen.getvalue()


def test_a_real_runsense_run_process_shows_markup_and_bad_bytes(defs_file, home):
    env = dict(os.environ, RUNSENSE_HOME=str(home))
    env.pop("PYTHONPATH", None)
    for job, code in (("etl[/x]", 0), ("broken_job", 1)):
        result = subprocess.run(
            [sys.executable, "-m", "runsense_cli", "-f", defs_file, "run", job],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == code, result.stdout + result.stderr
        assert "Traceback" not in result.stderr
        assert MARKUP in result.stdout.replace("\n", "")
        assert SHOWN_BAD in result.stdout
    statuses = sorted(run.status.value for run in open_storage().list_runs())
    assert statuses == ["FAILURE", "SUCCESS"]


def test_the_live_view_shows_queued_runs_too(defs_module):
    """Issue 10: the daemon's live view lists runs queued as well as in progress."""
    from rich.console import Console
    from rich.live import Live

    from runsense_cli.cli.daemon_view import LiveReporter
    from runsense_cli.evaluation import SensorEvaluator
    from runsense_cli.runs import RunStatus

    storage = open_storage()
    evaluator = SensorEvaluator(storage, defs_module.defs)
    evaluator.register_sensors()
    queued = storage.create_run("noisy_job", evaluator.location, status=RunStatus.QUEUED)
    screen = io.StringIO()
    reporter = LiveReporter(evaluator)
    reporter.live = Live(console=Console(file=screen, width=200, force_terminal=True))
    reporter.started(os.getpid(), [])
    reporter._draw()
    reporter.stopping()
    assert queued.run_id[:8] in screen.getvalue() and "QUEUED" in screen.getvalue()
