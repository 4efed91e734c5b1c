"""Executing runs: outputs, the event log each run writes, failures, logs and op config."""

from __future__ import annotations

import os

import pytest

from runsense_cli import RunStatus, job, op
from runsense_cli.errors import ConfigError
from runsense_cli.execution import execute_run, start_run
from runsense_cli.runs import EventType
from runsense_cli.storage import open_storage
from tests.helpers import claim

calls: list[str] = []


@op
def extract():
    calls.append("extract")
    return 20


@op
def add_one(n):
    calls.append("add_one")
    return n + 1


@op
def explode(n):
    calls.append("explode")
    raise ValueError(f"kaput at {n}")


@op
def after(n):
    calls.append("after")
    return n


@op(config_schema={"job_name": str, "times": int})
def status_report(context):
    context.log.info("reporting %s", context.op_config["job_name"])
    context.log.warning("twice")
    return context.op_config["job_name"] * context.op_config["times"]


@op
def who_am_i(context):
    return (context.run_id, context.job_name, context.run.status, context.op_config)


@job(tags={"team": "data"})
def pipeline():
    add_one(add_one(extract()))


@job
def failing():
    n = extract()
    after(explode(n))
    add_one(n)


@job
def status_reporting_job():
    status_report()


@job
def introspective():
    who_am_i()


@pytest.fixture(autouse=True)
def _reset_calls():
    calls.clear()


def events(run_id: str):
    with open_storage() as storage:
        return storage.events_for_run(run_id)


def test_execute_in_process_succeeds_with_outputs_and_a_stored_run(home):
    """Given a three-op job, when executed in process, then it succeeds with each op's output and
    the run is stored as SUCCESS with its tags and times."""
    result = pipeline.execute_in_process(tags={"who": "me"})

    assert result.success
    assert result.output_for_node("extract") == 20
    assert result.output_for_node("add_one_2") == 22
    with open_storage() as storage:
        run = storage.get_run(result.run_id)
    assert run.status == RunStatus.SUCCESS and run.is_success and run.is_finished
    assert run.job_name == "pipeline" and run.location == pipeline.location
    assert run.tags == {
        "team": "data",
        "who": "me",
        "runsense/launched_by": "execute_in_process",
    }
    assert run.start_time is not None and run.end_time >= run.start_time
    assert run.worker_pid == os.getpid()


def test_a_successful_run_writes_its_events_in_order(home):
    """Given a successful run, then its events are RUN_STARTING, RUN_START, one STEP_START and
    STEP_SUCCESS per op in order, then RUN_SUCCESS, with increasing ids."""
    result = pipeline.execute_in_process()
    log = events(result.run_id)

    assert [(e.event_type, e.step_key) for e in log] == [
        (EventType.RUN_STARTING, None),
        (EventType.RUN_START, None),
        (EventType.STEP_START, "extract"),
        (EventType.STEP_SUCCESS, "extract"),
        (EventType.STEP_START, "add_one"),
        (EventType.STEP_SUCCESS, "add_one"),
        (EventType.STEP_START, "add_one_2"),
        (EventType.STEP_SUCCESS, "add_one_2"),
        (EventType.RUN_SUCCESS, None),
    ]
    ids = [e.event_id for e in log]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert log[-1].message == 'Finished execution of run for "pipeline".'


def test_a_failing_op_fails_the_run_and_later_ops_do_not_run(home):
    """Given a job whose second op raises, when executed, then the run is FAILURE, the step
    failure carries the traceback, the run failure names the op and error, and no later op ran."""
    result = failing.execute_in_process()

    assert not result.success
    assert result.failed_step == "explode"
    assert calls == ["extract", "explode"]
    with open_storage() as storage:
        run = storage.get_run(result.run_id)
    assert run.status == RunStatus.FAILURE and run.is_failure and run.end_time is not None

    log = events(result.run_id)
    assert [(e.event_type, e.step_key) for e in log] == [
        (EventType.RUN_STARTING, None),
        (EventType.RUN_START, None),
        (EventType.STEP_START, "extract"),
        (EventType.STEP_SUCCESS, "extract"),
        (EventType.STEP_START, "explode"),
        (EventType.STEP_FAILURE, "explode"),
        (EventType.RUN_FAILURE, None),
    ]
    step_failure, run_failure = log[-2], log[-1]
    assert step_failure.error.cls_name == "ValueError"
    assert step_failure.error.message == "kaput at 20"
    assert step_failure.error.stack.startswith("Traceback (most recent call last):")
    assert 'raise ValueError(f"kaput at {n}")' in step_failure.error.stack
    assert run_failure.message == (
        'Execution of run for "failing" failed. Step "explode" failed: ValueError: kaput at 20'
    )
    assert run_failure.error == step_failure.error


def test_raise_on_error_raises_after_storing_the_failure(home):
    """Given raise_on_error=True, when an op fails, then the call raises and the run is stored."""
    with pytest.raises(RuntimeError, match='step "explode" failed: ValueError: kaput at 20'):
        failing.execute_in_process(raise_on_error=True)

    with open_storage() as storage:
        [run] = storage.list_runs()
    assert run.status == RunStatus.FAILURE


def test_context_log_writes_log_events_tagged_with_the_step_and_op_config_arrives(home):
    """Given an op that logs with its config, when run, then LOG events carry the step key, the
    level and the formatted message, and the op received its config."""
    config = {"ops": {"status_report": {"config": {"job_name": "etl", "times": 2}}}}
    result = status_reporting_job.execute_in_process(run_config=config)

    assert result.success
    assert result.output_for_node("status_report") == "etletl"
    logs = [e for e in events(result.run_id) if e.event_type == EventType.LOG]
    assert [(e.step_key, e.level, e.message) for e in logs] == [
        ("status_report", "INFO", "reporting etl"),
        ("status_report", "WARNING", "twice"),
    ]
    with open_storage() as storage:
        assert storage.get_run(result.run_id).run_config == config


def test_the_op_context_knows_its_run(home):
    """Given an op taking `context`, then it sees its run id, job name and STARTED status."""
    result = introspective.execute_in_process()

    run_id, job_name, status, op_config = result.output_for_node("who_am_i")
    assert (run_id, job_name, status, op_config) == (
        result.run_id,
        "introspective",
        RunStatus.STARTED,
        None,
    )


@pytest.mark.parametrize(
    ("run_config", "message"),
    [
        (None, "ops.status_report.config is missing"),
        (
            {"ops": {"status_report": {"config": {"job_name": "etl", "times": "2"}}}},
            "ops.status_report.config.times: expected int, got str '2'",
        ),
    ],
)
def test_invalid_run_config_raises_and_stores_nothing(home, run_config, message):
    """Given invalid run config, when executed in process, then ConfigError and nothing stored
    (not even a database file)."""
    with pytest.raises(ConfigError, match=message):
        status_reporting_job.execute_in_process(run_config=run_config)

    assert not (home / "runsense.db").exists()


def test_invalid_run_config_leaves_an_existing_database_unchanged(home):
    """Given a home with runs, when a run with bad config is attempted, then no run or event is
    added."""
    pipeline.execute_in_process()
    with open_storage() as storage:
        before = (len(storage.list_runs()), storage.newest_event_id())

    with pytest.raises(ConfigError):
        status_reporting_job.execute_in_process(run_config={"ops": {"nope": {"config": {}}}})

    with open_storage() as storage:
        assert (len(storage.list_runs()), storage.newest_event_id()) == before


def test_execute_in_process_honours_an_explicit_home(home, tmp_path):
    """Given home=DIR, when executed in process, then the run is stored there and not in
    RUNSENSE_HOME."""
    other = tmp_path / "other-home"
    result = pipeline.execute_in_process(home=str(other))

    with open_storage(other) as storage:
        assert storage.get_run(result.run_id).status == RunStatus.SUCCESS
    assert not home.exists()


def test_a_queued_run_is_executed_after_being_claimed(home):
    """Given a QUEUED run, when claimed and executed, then it goes QUEUED → STARTING → STARTED →
    SUCCESS with its stored config."""
    config = {"ops": {"status_report": {"config": {"job_name": "etl", "times": 1}}}}
    with open_storage() as storage:
        queued = storage.create_run(
            "status_reporting_job",
            status_reporting_job.location,
            config,
            status=RunStatus.QUEUED,
        )
        result = execute_run(storage, status_reporting_job, claim(storage, queued.run_id))
        types = [e.event_type for e in storage.events_for_run(queued.run_id)]

    assert result.success and result.output_for_node("status_report") == "etl"
    assert types[:3] == [EventType.RUN_ENQUEUED, EventType.RUN_STARTING, EventType.RUN_START]
    assert types[-1] == EventType.RUN_SUCCESS


def test_an_interrupted_run_is_canceled_and_the_interrupt_propagates(home):
    """Given an op interrupted by Ctrl-C, when executed, then the run is CANCELED and the
    KeyboardInterrupt still reaches the caller."""

    @op
    def interrupted():
        raise KeyboardInterrupt

    @job
    def ctrl_c():
        interrupted()

    with open_storage() as storage:
        run = start_run(storage, ctrl_c, launched_by="test")
        with pytest.raises(KeyboardInterrupt):
            execute_run(storage, ctrl_c, run)
        stored = storage.get_run(run.run_id)
        last = storage.events_for_run(run.run_id)[-1]

    assert stored.status == RunStatus.CANCELED and stored.is_finished
    assert last.event_type == EventType.RUN_CANCELED
    assert 'during step "interrupted"' in last.message


@op
def _explode():
    raise ValueError("kaput")


@op
def _after(x):
    return x + 1


@op
def _first():
    return 1


@job
def _fails_midway():
    _first()
    _explode()
    _after(_first())


def test_a_failing_op_fails_the_run_and_stops_later_ops(home):
    result = _fails_midway.execute_in_process()
    assert not result.success and result.failed_step == "_explode"
    storage = open_storage()
    events = storage.events_for_run(result.run_id)
    failure = next(e for e in events if e.event_type.value == "STEP_FAILURE")
    assert failure.error is not None and "ValueError: kaput" in failure.error.stack
    assert events[-1].event_type.value == "RUN_FAILURE"
    assert 'Step "_explode" failed: ValueError: kaput' in events[-1].message
    assert not any(e.step_key == "_after" for e in events)
    assert storage.get_run(result.run_id).status == RunStatus.FAILURE
