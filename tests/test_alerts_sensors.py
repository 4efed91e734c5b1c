"""Issue 11, item 1: several statuses in one sensor, and monitored_tags."""

from __future__ import annotations

from runsense_cli import (
    Definitions,
    RunStatus,
    SkipReason,
    job,
    op,
    run_failure_sensor,
    run_status_sensor,
)
from runsense_cli.evaluation import SensorEvaluator
from runsense_cli.records import ReactionState, SensorStatus
from runsense_cli.storage import open_storage


@op
def boom():
    raise ValueError("boom")


@job
def breaks():
    boom()


@op
def fine():
    return 1


@job
def works():
    fine()


def started(*sensors, jobs=(breaks, works)) -> SensorEvaluator:
    evaluator = SensorEvaluator(open_storage(), Definitions(jobs=list(jobs), sensors=list(sensors)))
    evaluator.register_sensors()
    for sensor in sensors:
        evaluator.storage.set_sensor_status(evaluator.state(sensor).sensor_id, SensorStatus.RUNNING)
    return evaluator


def test_a_sensor_on_a_list_of_statuses_sees_each_and_knows_which():
    seen = []

    @run_status_sensor([RunStatus.FAILURE, RunStatus.SUCCESS])
    def both(context):
        seen.append((context.dagster_run.job_name, context.dagster_event.event_type.value))

    assert [t.value for t in both.event_types] == ["RUN_FAILURE", "RUN_SUCCESS"]
    evaluator = started(both)
    breaks.execute_in_process()
    works.execute_in_process()
    evaluator.tick(both)
    assert seen == [("breaks", "RUN_FAILURE"), ("works", "RUN_SUCCESS")]
    events = evaluator.storage.events_for_run(evaluator.storage.list_runs("works")[0].run_id)
    assert events[-1].message.startswith('Sensor "both" acted on run status SUCCESS of run')


def test_the_failure_context_comes_with_a_failure_event_in_a_mixed_sensor():
    kinds = []

    @run_status_sensor([RunStatus.FAILURE, RunStatus.CANCELED])
    def failed_or_canceled(context):
        kinds.append(type(context).__name__)
        assert context.failure_event.message

    evaluator = started(failed_or_canceled)
    breaks.execute_in_process()
    evaluator.tick(failed_or_canceled)
    assert kinds == ["RunFailureSensorContext"]


def test_monitored_tags_keep_only_runs_with_every_tag_and_the_cursor_moves_past_others():
    seen = []

    @run_failure_sensor(monitored_tags={"team": "data", "tier": "1"})
    def data_team(context):
        seen.append(context.dagster_run.tags["run"])

    evaluator = started(data_team)
    breaks.execute_in_process(tags={"team": "data", "tier": "1", "run": "a"})
    breaks.execute_in_process(tags={"team": "data", "run": "b"})
    breaks.execute_in_process(tags={"team": "web", "tier": "1", "run": "c"})
    breaks.execute_in_process(tags={"run": "d"})
    result = evaluator.tick(data_team)
    assert seen == ["a"]
    assert result.tick.events_scanned == 4
    state = evaluator.state(data_team)
    # Nothing left to do: an idle daemon does not tick again for the runs that did not match.
    assert not evaluator.has_work(data_team, state, 0)
    reactions = evaluator.storage.reactions_for(state.sensor_id)
    assert [r.state for r in reactions] == [ReactionState.SUCCESS]


def test_monitored_tags_must_be_strings():
    import pytest

    from runsense_cli.errors import DefinitionError

    with pytest.raises(DefinitionError, match="monitored_tags"):
        run_failure_sensor(monitored_tags={"team": 1})(lambda context: None)


# -- item 2 and 3: retries, incidents, what sensors and the CLI see -----------------------------


@op
def flaky_op():
    raise RuntimeError("flaky")


@job(tags={"runsense/max_retries": "2"})
def retried():
    flaky_op()


def run_queued(storage, job_def):
    """Execute every queued run here, as a worker would after its launcher's claim."""
    from runsense_cli.execution import execute_run

    for run, _token in storage.claim_queued_runs("test/1/1", 100):
        execute_run(storage, job_def, run)


def test_a_retried_run_alerts_only_for_its_final_failure():
    alerted = []

    @run_failure_sensor
    def final_only(context):
        if context.dagster_run.will_retry:
            return SkipReason("will retry")
        alerted.append((context.dagster_run.tags.get("runsense/retry_number"), context.incident))

    evaluator = started(final_only, jobs=(retried,))
    first = retried.execute_in_process()
    run_queued(evaluator.storage, retried)
    run_queued(evaluator.storage, retried)
    evaluator.tick(final_only)
    runs = evaluator.storage.list_runs("retried")
    assert len(runs) == 3 and all(r.status == RunStatus.FAILURE for r in runs)
    assert [r.will_retry for r in reversed(runs)] == [True, True, False]
    [(number, incident)] = alerted
    assert number == "2"
    assert incident.opened_by_this_run and incident.failure_count == 1
    assert incident.first_run_id == runs[0].run_id
    assert runs[0].root_run_id == first.run_id


def test_incidents_command_and_runs_show_tell_the_story():
    import json

    from typer.testing import CliRunner

    from runsense_cli.cli import app

    breaks.execute_in_process()
    last = breaks.execute_in_process()
    runner = CliRunner()
    listed = runner.invoke(app, ["incidents", "--open", "--json"])
    assert listed.exit_code == 0, listed.output
    [incident] = json.loads(listed.stdout)
    assert (incident["job_name"], incident["status"], incident["failure_count"]) == (
        "breaks",
        "OPEN",
        2,
    )
    shown = runner.invoke(app, ["runs", "show", last.run_id[:8]])
    assert "incident #1: OPEN, 2 failure(s)" in shown.stdout
    works.execute_in_process()  # another job's success resolves nothing
    assert "breaks" in runner.invoke(app, ["incidents", "--open"]).stdout
    with open_storage() as storage:
        fixed = storage.create_run("breaks", last.run.location, status=RunStatus.STARTING)
        storage.set_run_status(storage.set_run_status(fixed, RunStatus.STARTED), RunStatus.SUCCESS)
    assert "No open incidents." in runner.invoke(app, ["incidents", "--open"]).stdout
    table = runner.invoke(app, ["incidents"]).stdout
    assert "RESOLVED" in table and "breaks" in table
