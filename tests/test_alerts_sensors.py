"""Issue 11, item 1: several statuses in one sensor, and monitored_tags."""

from __future__ import annotations

from runsense_cli import Definitions, RunStatus, job, op, run_failure_sensor, run_status_sensor
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
