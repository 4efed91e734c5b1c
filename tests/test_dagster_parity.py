"""Dagster's own run status sensor scenarios, ported: what a Dagster user writes must work here.

Ported from Dagster's `dagster_tests/definitions_tests/test_sensor_invocation.py` (direct calls,
`build_run_status_sensor_context`, `execute_in_process` results) and from its cross-location
sensor definitions (`CodeLocationSelector`). Event types are runsense's (`RUN_SUCCESS` where
Dagster says `PIPELINE_SUCCESS`). Every test uses a real SQLite home (conftest's `home`).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from runsense_cli import (
    CodeLocationSelector,
    DagsterRunStatus,
    Definitions,
    RunFailureSensorContext,
    RunRequest,
    RunsenseError,
    RunStatus,
    RunStatusSensorContext,
    build_run_status_sensor_context,
    job,
    op,
    run_failure_sensor,
    run_status_sensor,
)
from runsense_cli.cli import app
from runsense_cli.errors import DefinitionError
from runsense_cli.evaluation import SensorEvaluator
from runsense_cli.records import MAX_LOG_LINE_CHARS, MAX_TICK_LOG_LINES, ReactionState, SensorStatus
from runsense_cli.runs import EventType
from runsense_cli.storage import Storage, open_storage
from tests.processes import cli

runner = CliRunner()


@op
def succeeds():
    return 1


@op
def will_fail():
    raise Exception("failure")


@job
def my_job_2():
    succeeds()


@job
def my_job():
    will_fail()


@pytest.fixture
def storage(home):
    with open_storage() as storage:
        yield storage


def started(storage: Storage, defs: Definitions, *sensors) -> SensorEvaluator:
    """An evaluator whose `sensors` were started (`runsense sensor start`) before any run."""
    evaluator = SensorEvaluator(storage, defs)
    evaluator.register_sensors()
    for sensor in sensors:
        evaluator.storage.set_sensor_status(evaluator.state(sensor).sensor_id, SensorStatus.RUNNING)
    return evaluator


def rs(proj: Path, *args: str):
    return runner.invoke(app, ["-f", str(proj), *args])


# -- 1. a sensor function that takes no context ------------------------------------------------

NO_CONTEXT_PROJECT = """
from runsense_cli import (
    DagsterRunStatus, Definitions, RunRequest, job, op, run_failure_sensor, run_status_sensor,
)

@op
def an_op():
    pass

@job
def target_job():
    an_op()

@op
def boom():
    raise ValueError("boom")

@job
def bad_job():
    boom()

@run_status_sensor(run_status=DagsterRunStatus.FAILURE, request_job=target_job)
def failure_sensor():
    return RunRequest(job_name="target_job")

@run_failure_sensor
def code_location_a_sensor():
    pass

defs = Definitions(jobs=[bad_job], sensors=[failure_sensor, code_location_a_sensor])
"""


def test_sensors_whose_function_takes_no_context_react_in_a_tick(project):
    """Dagster's docs define `def code_location_a_sensor():` with no parameter: under runsense
    each reaction must call it without a context, not fail with a TypeError."""
    proj = project(NO_CONTEXT_PROJECT)
    assert rs(proj, "sensor", "start", "failure_sensor", "code_location_a_sensor").exit_code == 0
    assert rs(proj, "run", "bad_job").exit_code == 1

    result = rs(proj, "sensor", "tick")

    assert result.exit_code == 0, result.output
    assert (
        "failure_sensor: SUCCESS · 1 event(s), 1 reaction(s), 1 run(s) requested" in result.stdout
    )
    assert "code_location_a_sensor: SUCCESS · 1 event(s), 1 reaction(s)" in result.stdout
    assert "target_job SUCCESS" in result.stdout
    assert "failed" not in result.stdout
    assert rs(proj, "sensor", "failures").stdout.strip() == "No failed reactions."


def test_the_context_parameter_may_have_any_name_or_be_keyword_only(storage):
    seen: list[str] = []

    @run_failure_sensor
    def underscore(_):
        seen.append(f"_ {_.dagster_run.job_name}")

    @run_failure_sensor
    def keyword_only(*, ctx):
        seen.append(f"kw {ctx.failure_event.event_type.value}")

    defs = Definitions(jobs=[my_job], sensors=[underscore, keyword_only])
    evaluator = started(storage, defs, underscore, keyword_only)
    my_job.execute_in_process()
    evaluator.tick(underscore)
    evaluator.tick(keyword_only)

    assert seen == ["_ my_job", "kw RUN_FAILURE"]


def test_direct_invocation_follows_dagsters_rules(storage):
    """Dagster's test_sensor_invocation_args, for run status sensors."""
    result = my_job_2.execute_in_process()
    context = build_run_status_sensor_context(
        sensor_name="status_sensor",
        dagster_instance=storage,
        dagster_run=result.dagster_run,
        dagster_event=result.get_run_success_event(),
    )

    @run_status_sensor(run_status=DagsterRunStatus.SUCCESS)
    def basic_sensor_no_arg():
        return RunRequest(run_key=None, run_config={}, tags={})

    assert basic_sensor_no_arg().run_config == {}
    assert basic_sensor_no_arg(context).run_config == {}  # a context given is ignored

    @run_status_sensor(run_status=DagsterRunStatus.SUCCESS)
    def basic_sensor(_):
        return RunRequest(run_key=None, run_config={}, tags={})

    assert basic_sensor(context).run_config == {}
    assert basic_sensor(None).run_config == {}

    @run_status_sensor(run_status=DagsterRunStatus.SUCCESS)
    def basic_sensor_with_context(_arbitrary_context):
        assert _arbitrary_context.dagster_event.event_type == EventType.RUN_SUCCESS
        return RunRequest(run_key=None, run_config={}, tags={})

    assert basic_sensor_with_context(context).run_config == {}
    assert basic_sensor_with_context(_arbitrary_context=context).run_config == {}
    with pytest.raises(TypeError, match="expected argument '_arbitrary_context'"):
        basic_sensor_with_context(bad_context=context)
    with pytest.raises(TypeError, match="needs a context"):
        basic_sensor_with_context()
    with pytest.raises(TypeError, match="takes one argument"):
        basic_sensor_with_context(context, _arbitrary_context=None)


def test_a_sensor_function_with_a_second_required_parameter_is_refused_when_defined():
    """Dagster would fill it with a resource; runsense has none, so it says so at load time
    instead of failing every reaction."""
    with pytest.raises(DefinitionError) as caught:

        @run_failure_sensor
        def with_resource(context, slack):
            pass

    assert str(caught.value).startswith("sensor 'with_resource': parameter 'slack' would get no")


# -- 2. build_run_status_sensor_context(dagster_instance=...) and for_run_failure() -------------


def test_a_run_status_sensor_invoked_with_a_built_context(storage):
    """Dagster's test_run_status_sensor."""
    seen: list[str] = []

    @run_status_sensor(run_status=DagsterRunStatus.SUCCESS)
    def status_sensor(context):
        assert context.dagster_event.event_type == EventType.RUN_SUCCESS
        seen.append(context.dagster_run.run_id)

    result = my_job_2.execute_in_process()
    context = build_run_status_sensor_context(
        sensor_name="status_sensor",
        dagster_instance=storage,
        dagster_run=result.dagster_run,
        dagster_event=result.get_run_success_event(),
    )
    status_sensor(context)

    assert seen == [result.run_id]
    assert context.instance.get_run_by_id(result.run_id) == result.dagster_run


def test_a_run_failure_sensor_invoked_with_for_run_failure(storage):
    """Dagster's test_run_failure_sensor and test_run_failure_w_run_request."""
    result = my_job.execute_in_process()
    context = build_run_status_sensor_context(
        sensor_name="failure_sensor",
        dagster_instance=storage,
        dagster_run=result.dagster_run,
        dagster_event=result.get_run_failure_event(),
    ).for_run_failure()

    @run_failure_sensor
    def failure_sensor(context):
        assert context.dagster_event.event_type == EventType.RUN_FAILURE
        return [step.step_key for step in context.get_step_failure_events()]

    @run_failure_sensor
    def basic_sensor(_):
        return RunRequest(run_key=None, run_config={}, tags={})

    assert isinstance(context, RunFailureSensorContext)
    assert context.failure_event.message.endswith('Step "will_fail" failed: Exception: failure')
    assert failure_sensor(context) == ["will_fail"]
    assert basic_sensor(context).run_config == {}


def test_a_failure_sensor_given_a_plain_context_gets_a_failure_context(storage):
    """Dagster's run_failure_sensor converts what it is given with for_run_failure()."""
    result = my_job_2.execute_in_process()
    plain = RunStatusSensorContext("failure_sensor", result.dagster_run, None, storage)
    kinds: list[str] = []

    @run_failure_sensor
    def failure_sensor(context):
        kinds.append(type(context).__name__)
        return context.failure_event

    assert failure_sensor(plain) is None
    assert kinds == ["RunFailureSensorContext"]
    converted = plain.for_run_failure()
    assert (converted.sensor_name, converted.dagster_run, converted.instance) == (
        "failure_sensor",
        result.dagster_run,
        plain.instance,
    )


def test_instance_and_dagster_instance_cannot_disagree(storage):
    run = my_job_2.execute_in_process().dagster_run
    with pytest.raises(TypeError, match="not both"):
        build_run_status_sensor_context("s", run, instance=storage, dagster_instance=object())
    assert build_run_status_sensor_context("s", run, storage, dagster_instance=storage).instance


# -- 3. RunRequest() without run_config or tags ------------------------------------------------


def test_a_run_request_without_config_or_tags_has_empty_ones_and_still_launches(storage):
    assert RunRequest().run_config == {} and RunRequest().tags == {}
    assert RunRequest(run_key=None, run_config=None, tags=None).run_config == {}
    assert RunRequest(run_key=None, run_config=None, tags=None).tags == {}

    @run_status_sensor(DagsterRunStatus.SUCCESS, monitored_jobs=[my_job_2], request_job=my_job)
    def bare(context):
        return RunRequest()

    defs = Definitions(jobs=[my_job_2, my_job], sensors=[bare])
    evaluator = started(storage, defs, bare)
    my_job_2.execute_in_process()
    [requested] = evaluator.tick(bare).tick.run_ids

    run = storage.get_run(requested)
    assert (run.job_name, run.status, run.run_config) == ("my_job", RunStatus.QUEUED, {})


# -- 4. what execute_in_process returns ----------------------------------------------------------


def test_the_in_process_result_gives_the_run_and_its_status_events(storage):
    success, failure = my_job_2.execute_in_process(), my_job.execute_in_process()

    assert success.dagster_run == storage.get_run(success.run_id)
    assert success.dagster_run.status == RunStatus.SUCCESS
    event = success.get_run_success_event()
    assert (event.run_id, event.event_type) == (success.run_id, EventType.RUN_SUCCESS)
    assert event == storage.status_event_for_run(success.run_id, EventType.RUN_SUCCESS)
    assert failure.get_run_failure_event().event_type == EventType.RUN_FAILURE
    # Dagster's earlier names, still in its docs
    assert success.get_job_success_event() == event
    assert failure.get_job_failure_event() == failure.get_run_failure_event()
    # As Dagster does, asking a run for an event it does not have is an error, not a None.
    with pytest.raises(RunsenseError, match="has no RUN_SUCCESS event: it ended FAILURE"):
        failure.get_run_success_event()
    with pytest.raises(RunsenseError, match="has no RUN_FAILURE event: it ended SUCCESS"):
        success.get_run_failure_event()


# -- 5. what the function logs is kept with the tick ---------------------------------------------


def test_a_tick_keeps_what_the_function_logged_prefixed_with_the_run(storage, caplog, monkeypatch):
    # The sensor's logger lets WARNING and up through (the CLI lets INFO through too).
    caplog.set_level(logging.WARNING, logger="runsense.sensor.talker")
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    monkeypatch.setattr(logging.getLogger("runsense.sensor.talker"), "handlers", [handler])

    @run_failure_sensor
    def talker(context):
        context.log.debug("not kept unless DEBUG is on")
        context.log.info("saw %s", context.dagster_run.job_name)
        context.log.warning("%(n)d step(s) failed", {"n": len(context.get_step_failure_events())})
        if context.dagster_run.tags.get("explode"):
            context.log.error("about to raise")
            raise RuntimeError("boom")

    defs = Definitions(jobs=[my_job], sensors=[talker])
    evaluator = started(storage, defs, talker)
    first = my_job.execute_in_process().run_id[:8]
    second = my_job.execute_in_process(tags={"explode": "yes"}).run_id[:8]

    tick = evaluator.tick(talker).tick

    assert tick.logs == [
        f"INFO run {first}: saw my_job",
        f"WARNING run {first}: 1 step(s) failed",
        f"INFO run {second}: saw my_job",
        f"WARNING run {second}: 1 step(s) failed",
        f"ERROR run {second}: about to raise",  # a failed reaction keeps its lines too
    ]
    assert evaluator.tick(talker).tick.logs == []  # the next tick starts empty
    # What logging lets through still reaches its handlers, each record naming the user's own
    # line as a Logger's would; the tick kept INFO too.
    assert [r.getMessage() for r in records] == ["1 step(s) failed"] * 2 + ["about to raise"]
    assert {(r.filename, r.funcName) for r in records} == {(Path(__file__).name, "talker")}


def test_tick_logs_are_bounded_per_tick_and_per_line(storage):
    @run_failure_sensor
    def chatty(context):
        context.log.info("x" * 2000)
        for n in range(30):
            context.log.info("line %d", n)

    defs = Definitions(jobs=[my_job], sensors=[chatty])
    evaluator = started(storage, defs, chatty)
    run_id = my_job.execute_in_process().run_id
    my_job.execute_in_process()

    logs = evaluator.tick(chatty).tick.logs

    assert len(logs) == MAX_TICK_LOG_LINES == 50
    assert len(logs[0]) == MAX_LOG_LINE_CHARS == 500
    assert logs[0].startswith(f"INFO run {run_id[:8]}: xxx") and logs[0].endswith("x…")
    assert logs[1].endswith(": line 0")
    assert logs[-2].endswith(": line 16")  # 31 lines of the first run + 18 of the second
    assert logs[-1] == "… 13 more log line(s) not kept"  # 62 logged, 49 kept


TALKER = """
from runsense_cli import Definitions, job, op, run_failure_sensor

@op
def boom():
    raise ValueError("boom")

@job
def bad_job():
    boom()

@run_failure_sensor
def talker(context):
    context.log.info("talker saw %s [bold]not markup[/bold]", context.dagster_run.job_name)

defs = Definitions(jobs=[bad_job], sensors=[talker])
"""


def tick_talker(proj: Path) -> str:
    """Start `talker`, fail a run, tick: the short id of the failed run."""
    rs(proj, "sensor", "start", "talker")
    rs(proj, "run", "bad_job")
    [run] = json.loads(rs(proj, "runs", "list", "--json").stdout)
    result = cli(Path(os.environ["RUNSENSE_HOME"]), proj, "sensor", "tick")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "INFO talker saw bad_job [bold]not markup[/bold]" in result.stderr  # as before
    return run["run_id"][:8]


def test_sensor_ticks_shows_what_each_tick_logged(project):
    proj = project(TALKER)
    short = tick_talker(proj)
    rs(proj, "sensor", "tick")  # a second tick, with nothing to log

    table = rs(proj, "sensor", "ticks", "talker")
    ticks = json.loads(rs(proj, "sensor", "ticks", "talker", "--json").stdout)

    assert table.exit_code == 0, table.output
    line = f"INFO run {short}: talker saw bad_job [bold]not markup[/bold]"
    assert [t["logs"] for t in ticks] == [[], [line]]
    lines = table.stdout.splitlines()
    header = lines.index(f"tick {ticks[1]['tick_id']} logged:")
    assert lines[header + 1 :] == [f"  {line}"]  # literally, under the table, one per line
    assert f"tick {ticks[0]['tick_id']} logged:" not in table.stdout


def test_sensor_ticks_shows_the_logs_from_the_database(project):
    proj = project(TALKER)
    short = tick_talker(proj)

    [tick] = json.loads(rs(proj, "sensor", "ticks", "talker", "--json").stdout)

    assert tick["logs"] == [f"INFO run {short}: talker saw bad_job [bold]not markup[/bold]"]


# -- 6. monitoring a whole other code location ---------------------------------------------------


def make_job(name: str):
    @job(name=name)
    def _job():
        succeeds()

    return _job


def test_a_whole_location_can_be_named_in_monitored_jobs():
    by_name = run_status_sensor(RunStatus.SUCCESS, monitored_jobs=["loc_b:*", "a_job"])(
        lambda: None
    )
    by_selector = run_status_sensor(
        RunStatus.SUCCESS, monitored_jobs=[CodeLocationSelector(location_name="loc_b")]
    )(lambda: None)

    assert by_name.monitored_names() == ["loc_b:*", "a_job"]
    assert by_selector.monitored_names() == ["loc_b:*"]
    assert CodeLocationSelector("loc_b") == CodeLocationSelector(location_name="loc_b")


def test_a_sensor_monitoring_a_whole_location_sees_every_job_of_it(storage):
    """Dagster's cross-location sensor: `monitored_jobs=[CodeLocationSelector(...)]`."""
    a_job, b_one, b_two, c_job = (make_job(n) for n in ("a_job", "b_one", "b_two", "c_job"))
    seen: dict[str, list[str]] = {"by_name": [], "by_selector": []}

    def watcher(name: str, monitored: list):
        def fn(context):
            seen[name].append(f"{context.dagster_run.location}:{context.dagster_run.job_name}")

        return run_status_sensor(RunStatus.SUCCESS, name=name, monitored_jobs=monitored)(fn)

    by_name = watcher("by_name", ["loc_b:*", "a_job"])
    by_selector = watcher("by_selector", [CodeLocationSelector("loc_b")])
    defs_a = Definitions(jobs=[a_job], sensors=[by_name, by_selector])
    defs_a.set_location("loc_a")
    for location, location_job in (("loc_b", b_one), ("loc_b", b_two), ("loc_c", c_job)):
        Definitions(jobs=[location_job]).set_location(location)
    evaluator = started(storage, defs_a, by_name, by_selector)

    for each in (a_job, b_one, b_two, c_job):
        each.execute_in_process()
    for sensor in (by_name, by_selector):
        assert evaluator.tick(sensor).tick.status.value == "SUCCESS"

    assert seen == {
        "by_name": ["loc_a:a_job", "loc_b:b_one", "loc_b:b_two"],
        "by_selector": ["loc_b:b_one", "loc_b:b_two"],
    }
    reactions = evaluator.storage.reactions_for(evaluator.state(by_selector).sensor_id)
    assert {r.state for r in reactions} == {ReactionState.SUCCESS}


DEFAULT_STATUS = """
from runsense_cli import DefaultSensorStatus, Definitions, RunStatus, job, op, run_status_sensor

@op
def one():
    return 1

@job
def a_job():
    one()

@run_status_sensor(run_status=RunStatus.SUCCESS, default_status=DefaultSensorStatus.{status})
def watcher(context):
    return None

defs = Definitions(jobs=[a_job], sensors=[watcher])
"""


def test_default_status_follows_the_code_until_a_person_starts_or_stops_it(project):
    """Dagster's rule: the stored status wins only once `sensor start`/`stop` set it, and
    `sensor reset` hands it back to the code; the cursor still starts when the sensor does."""

    runner = CliRunner()
    path = project(DEFAULT_STATUS.format(status="RUNNING"), name="status_defs")

    def status() -> str:
        result = runner.invoke(app, ["-f", str(path), "sensor", "list", "--json"])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)[0]["status"]

    def rewrite(default: str) -> None:
        path.write_text(DEFAULT_STATUS.format(status=default))
        sys.modules.pop("status_defs", None)

    assert status() == "RUNNING"
    rewrite("STOPPED")
    assert status() == "STOPPED"  # the deployment turned it off in code
    assert runner.invoke(app, ["-f", str(path), "sensor", "start", "watcher"]).exit_code == 0
    assert status() == "RUNNING"  # pinned by a person
    rewrite("RUNNING")
    rewrite("STOPPED")
    assert status() == "RUNNING"
    reset = runner.invoke(app, ["-f", str(path), "sensor", "reset", "watcher"])
    assert reset.exit_code == 0 and "follows its code again: STOPPED" in reset.stdout
    assert status() == "STOPPED"
