"""SensorEvaluator.tick: what a run status sensor sees, what it does, and what a tick records.

Runs are executed for real into the test's home; "start" and "stop" are the storage calls the CLI
makes; time for retries moves through the evaluator's `clock`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from itertools import pairwise
from pathlib import Path

import pytest

from runsense_cli import (
    DagsterRunStatus,
    DefaultSensorStatus,
    Definitions,
    PermanentReactionError,
    RunRequest,
    RunStatus,
    SkipReason,
    job,
    op,
    run_failure_sensor,
    run_status_sensor,
)
from runsense_cli.errors import SensorBusyError
from runsense_cli.evaluation import SensorEvaluator
from runsense_cli.execution import RunResult, execute_run, start_run
from runsense_cli.identity import ProcessId
from runsense_cli.project import find_project, load_project
from runsense_cli.reacting import MAX_RETRY_DELAY_S
from runsense_cli.records import ReactionState, SensorStatus, TickStatus
from runsense_cli.runs import EventType
from runsense_cli.storage import Storage, open_storage
from runsense_cli.storage.sqlite import SqliteStorage
from tests.helpers import claim

# -- the seed's definitions ---------------------------------------------------------------------


@op
def work():
    return 1


@op
def fail():
    raise RuntimeError("nope")


@job
def job_a():
    work()


@job
def job_b():
    work()


@job
def failing_job():
    fail()


@op(config_schema={"job_name": str})
def status_report(context):
    context.log.info("reporting " + context.op_config["job_name"])


@job
def status_reporting_job():
    status_report()


@run_status_sensor(
    run_status=DagsterRunStatus.SUCCESS,
    request_job=status_reporting_job,
)
def report_status_sensor(context):
    # this condition prevents the sensor from triggering status_reporting_job again after it succeeds
    if context.dagster_run.job_name != status_reporting_job.name:
        run_config = {
            "ops": {"status_report": {"config": {"job_name": context.dagster_run.job_name}}}
        }
        return RunRequest(run_key=None, run_config=run_config)
    else:
        return SkipReason("Don't report status of status_reporting_job")


# -- helpers ------------------------------------------------------------------------------------


class Clock:
    """A clock for the evaluator that only moves when a test says so (starts at real time, so
    reactions requeued with the real time are due)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def storage(home, backend, monkeypatch):
    """Every scenario runs on both backends; RUNSENSE_DATABASE_URL sends `execute_in_process`
    and the subprocesses some scenarios start to the same database."""
    monkeypatch.setenv("RUNSENSE_DATABASE_URL", backend)
    with open_storage(url=backend) as storage:
        yield storage


def evaluator_for(storage: Storage, defs: Definitions, **kwargs) -> SensorEvaluator:
    evaluator = SensorEvaluator(storage, defs, **kwargs)
    evaluator.register_sensors()
    return evaluator


def start(evaluator: SensorEvaluator, sensor) -> None:
    """What `runsense sensor start NAME` does."""
    state = evaluator.state(sensor)
    evaluator.storage.set_sensor_status(state.sensor_id, SensorStatus.RUNNING)


def started(storage: Storage, defs: Definitions, *sensors, **kwargs) -> SensorEvaluator:
    evaluator = evaluator_for(storage, defs, **kwargs)
    for sensor in sensors:
        start(evaluator, sensor)
    return evaluator


def run(storage: Storage, job_def, run_config=None) -> RunResult:
    """A real run of `job_def`, as `runsense run` makes it."""
    return execute_run(storage, job_def, start_run(storage, job_def, run_config, launched_by="cli"))


def run_queued(storage: Storage, defs: Definitions, run_ids) -> list[RunResult]:
    """Execute requested (QUEUED) runs the way a run worker does: claim, then execute."""
    results = []
    for run_id in run_ids:
        queued = claim(storage, run_id)
        results.append(execute_run(storage, defs.get_job(queued.job_name), queued))
    return results


def reactions(evaluator: SensorEvaluator, sensor):
    return evaluator.storage.reactions_for(evaluator.state(sensor).sensor_id)


def write_backs(storage: Storage, run_id: str) -> list[str]:
    return [
        e.message
        for e in storage.events_for_run(run_id)
        if e.event_type == EventType.SENSOR_REACTION
    ]


# -- 1. the cursor starts when the sensor starts -------------------------------------------------


def test_runs_that_end_before_a_start_never_fire_and_runs_after_always_do(storage):
    """Given a stopped sensor already known to runsense and a run that ends while it is stopped,
    when it is started and another run ends, then only the later run fires it — now and later."""
    defs = Definitions(jobs=[job_a], sensors=[report_status_sensor])
    evaluator = evaluator_for(storage, defs)
    before = run(storage, job_a)

    start(evaluator, report_status_sensor)
    after = run(storage, job_a)
    first = evaluator.tick(report_status_sensor)
    second = evaluator.tick(report_status_sensor)

    assert [r.run_id for r in reactions(evaluator, report_status_sensor)] == [after.run_id]
    assert first.tick.status == TickStatus.SUCCESS and len(first.tick.run_ids) == 1
    assert second.tick.status == TickStatus.SKIPPED and second.tick.reactions == 0
    assert storage.get_run(first.tick.run_ids[0]).parent_run_id == after.run_id
    assert before.run_id not in {
        storage.get_run(r).parent_run_id for r in first.tick.run_ids + second.tick.run_ids
    }


def test_a_default_running_sensor_starts_when_first_loaded(storage):
    """Given a default_status=RUNNING sensor and a run that ended before runsense first loaded
    it, when a later run ends, then only the later run fires it."""

    @run_failure_sensor(default_status=DefaultSensorStatus.RUNNING)
    def on_failure(context):
        pass

    defs = Definitions(jobs=[failing_job], sensors=[on_failure])
    before = run(storage, failing_job)
    evaluator = evaluator_for(storage, defs)
    assert evaluator.state(on_failure).status == SensorStatus.RUNNING
    after = run(storage, failing_job)

    evaluator.tick(on_failure)

    assert [r.run_id for r in reactions(evaluator, on_failure)] == [after.run_id]
    assert write_backs(storage, before.run_id) == []


# -- 2. which status each sensor reacts to -------------------------------------------------------


def test_success_and_started_sensors_react_to_a_success_only_started_to_a_failure(storage):
    """Given a SUCCESS sensor and a STARTED sensor, when one run succeeds and one fails, then
    both react to the success and only STARTED reacts to the failure."""
    seen: dict[str, list[str]] = {"success": [], "started": []}

    @run_status_sensor(run_status=RunStatus.SUCCESS)
    def on_success(context):
        seen["success"].append(context.dagster_run.run_id)
        assert context.dagster_event.event_type == EventType.RUN_SUCCESS

    @run_status_sensor(run_status=RunStatus.STARTED)
    def on_started(context):
        seen["started"].append(context.dagster_run.run_id)
        assert context.event.event_type == EventType.RUN_START

    defs = Definitions(jobs=[job_a, failing_job], sensors=[on_success, on_started])
    evaluator = started(storage, defs, on_success, on_started)
    ok = run(storage, job_a)
    bad = run(storage, failing_job)

    evaluator.tick(on_success)
    evaluator.tick(on_started)

    assert seen == {"success": [ok.run_id], "started": [ok.run_id, bad.run_id]}


def test_a_failure_sensor_gets_the_failure_message_and_step_errors(storage):
    """Given a failure sensor, when a run fails, then its context has the failure message and the
    failed op's error with its traceback."""
    seen = {}

    @run_failure_sensor
    def on_failure(context):
        seen["message"] = context.failure_event.message
        seen["steps"] = [(s.step_key, str(s.error)) for s in context.get_step_failure_events()]
        seen["stack"] = context.get_step_failure_events()[0].error.stack

    defs = Definitions(jobs=[failing_job], sensors=[on_failure])
    evaluator = started(storage, defs, on_failure)
    run(storage, failing_job)

    evaluator.tick(on_failure)

    assert seen["message"] == (
        'Execution of run for "failing_job" failed. Step "fail" failed: RuntimeError: nope'
    )
    assert seen["steps"] == [("fail", "RuntimeError: nope")]
    assert 'raise RuntimeError("nope")' in seen["stack"]


def test_queued_starting_and_canceled_sensors_see_every_kind_of_run(storage):
    """Given sensors on QUEUED, STARTING and CANCELED, when a sensor requests a run, a worker
    claims it, and an interrupted run is canceled, then each sensor reacts to its own status."""
    seen: dict[str, list[str]] = {"QUEUED": [], "STARTING": [], "CANCELED": []}

    def watcher(status):
        @run_status_sensor(status, name=f"on_{status.value.lower()}")
        def fn(context):
            seen[status.value].append(context.dagster_run.job_name)

        return fn

    @op
    def interrupted():
        raise KeyboardInterrupt

    @job
    def ctrl_c():
        interrupted()

    @run_status_sensor(RunStatus.SUCCESS, monitored_jobs=[job_a], request_job=job_b)
    def requester(context):
        return RunRequest()

    watchers = [watcher(s) for s in (RunStatus.QUEUED, RunStatus.STARTING, RunStatus.CANCELED)]
    defs = Definitions(jobs=[job_a, ctrl_c], sensors=[requester, *watchers])
    evaluator = started(storage, defs, requester, *watchers)
    run(storage, job_a)
    requested = evaluator.tick(requester).tick.run_ids
    run_queued(storage, defs, requested)
    with pytest.raises(KeyboardInterrupt):
        run(storage, ctrl_c)

    for sensor in watchers:
        evaluator.tick(sensor)

    assert seen == {
        "QUEUED": ["job_b"],
        "STARTING": ["job_a", "job_b", "ctrl_c"],
        "CANCELED": ["ctrl_c"],
    }


# -- 3. which jobs and locations a sensor watches ------------------------------------------------


def make_job(name: str):
    @job(name=name)
    def _job():
        work()

    return _job


def make_sensor(name: str, **kwargs):
    seen: list[str] = []

    def fn(context):
        seen.append(f"{context.dagster_run.location}:{context.dagster_run.job_name}")

    sensor = run_status_sensor(RunStatus.SUCCESS, name=name, **kwargs)(fn)
    return sensor, seen


def test_monitored_jobs_and_code_locations_scope_what_a_sensor_sees(storage):
    """Given two locations in one home, when jobs of both succeed, then a sensor sees its own
    location's jobs by default, `monitored_jobs` narrows that (job objects, names, and
    "location:job"), and monitor_all_code_locations sees every location."""
    a_job, a_other, b_job = make_job("a_job"), make_job("a_other"), make_job("b_job")
    defs_b = Definitions(jobs=[b_job])
    defs_b.set_location("loc_b")
    default, seen_default = make_sensor("default")
    only_a, seen_only_a = make_sensor("only_a", monitored_jobs=[a_job])
    by_name, seen_by_name = make_sensor("by_name", monitored_jobs=["a_other", "b_job"])
    remote, seen_remote = make_sensor("remote", monitored_jobs=["loc_b:b_job"])
    remote_obj, seen_remote_obj = make_sensor("remote_obj", monitored_jobs=[b_job])
    everything, seen_everything = make_sensor("everything", monitor_all_code_locations=True)
    sensors_a = [default, only_a, by_name, remote, remote_obj, everything]
    defs_a = Definitions(jobs=[a_job, a_other], sensors=sensors_a)
    defs_a.set_location("loc_a")
    same_name_b, seen_same_name_b = make_sensor("default")
    defs_b = Definitions(jobs=[b_job], sensors=[same_name_b])
    defs_b.set_location("loc_b")
    evaluator_a = started(storage, defs_a, *sensors_a)
    evaluator_b = started(storage, defs_b, same_name_b)

    run(storage, a_job)
    run(storage, a_other)
    run(storage, b_job)
    for sensor in sensors_a:
        evaluator_a.tick(sensor)
    evaluator_b.tick(same_name_b)

    assert seen_default == ["loc_a:a_job", "loc_a:a_other"]
    assert seen_only_a == ["loc_a:a_job"]
    assert seen_by_name == ["loc_a:a_other"]  # a bare name means a job of this location
    assert seen_remote == ["loc_b:b_job"]
    assert seen_remote_obj == ["loc_b:b_job"]
    assert seen_everything == ["loc_a:a_job", "loc_a:a_other", "loc_b:b_job"]
    assert seen_same_name_b == ["loc_b:b_job"]
    assert evaluator_a.state(default).sensor_id != evaluator_b.state(same_name_b).sensor_id


def test_runs_started_in_process_are_seen_like_any_other(storage):
    """Given a run made by job.execute_in_process, then a sensor of its location reacts to it."""

    @run_status_sensor(RunStatus.SUCCESS, monitored_jobs=[job_a])
    def on_a(context):
        pass

    defs = Definitions(jobs=[job_a], sensors=[on_a])
    evaluator = started(storage, defs, on_a)

    result = job_a.execute_in_process()
    evaluator.tick(on_a)

    assert [r.run_id for r in reactions(evaluator, on_a)] == [result.run_id]


# -- 4. one tick handles the whole backlog -------------------------------------------------------


def test_one_tick_handles_a_backlog_of_500_runs_with_the_seed_sensor(storage):
    """Given 500 finished runs waiting for the seed's sensor, when it ticks once, then it makes
    500 reactions and 500 QUEUED runs of status_reporting_job carrying their lineage; when those
    runs succeed, the sensor skips them."""
    defs = Definitions(jobs=[job_a], sensors=[report_status_sensor])
    evaluator = started(storage, defs, report_status_sensor)
    parents = [run(storage, job_a).run_id for _ in range(500)]

    result = evaluator.tick(report_status_sensor)

    assert result.tick.status == TickStatus.SUCCESS
    assert (result.tick.events_scanned, result.tick.reactions) == (500, 500)
    # The tick counts every run it requested and keeps the first 100 ids (its row stays small).
    assert result.tick.runs_requested == 500 and len(result.tick.run_ids) == 100
    queued = storage.list_runs(job_name="status_reporting_job", limit=None)
    assert len(queued) == 500 and set(result.tick.run_ids) <= {r.run_id for r in queued}
    assert {r.status for r in queued} == {RunStatus.QUEUED}
    assert sorted(r.tags["runsense/parent_run_id"] for r in queued) == sorted(parents)
    for requested in queued:
        parent = requested.tags["runsense/parent_run_id"]
        assert requested.tags["runsense/sensor"] == "report_status_sensor"
        assert requested.tags["runsense/root_run_id"] == parent
        assert requested.tags["runsense/depth"] == "1"
        assert "runsense/run_key" not in requested.tags
        assert (requested.parent_run_id, requested.root_run_id) == (parent, parent)
        assert requested.run_config == {"ops": {"status_report": {"config": {"job_name": "job_a"}}}}
    assert evaluator.lag(report_status_sensor) == 0

    done = run_queued(storage, defs, result.tick.run_ids[:3])
    assert all(r.success for r in done)
    skipped = evaluator.tick(report_status_sensor)

    assert skipped.tick.status == TickStatus.SKIPPED
    assert skipped.tick.run_ids == [] and skipped.tick.runs_requested == 0
    assert (skipped.tick.reactions, skipped.tick.skipped) == (3, 3)
    assert skipped.tick.skip_reasons == ["Don't report status of status_reporting_job"]  # distinct
    assert len(storage.list_runs(job_name="status_reporting_job", limit=None)) == 500


def test_a_backlog_larger_than_a_page_is_handled_in_one_tick_of_several_pages(storage):
    """Given 130 waiting failures and a page size of 50, when the sensor ticks once, then every
    run gets exactly one reaction, in event order, recorded as one tick."""
    calls: list[str] = []

    @run_failure_sensor
    def on_failure(context):
        calls.append(context.dagster_run.run_id)

    defs = Definitions(jobs=[failing_job], sensors=[on_failure])
    evaluator = started(storage, defs, on_failure, page_size=50)
    runs = [run(storage, failing_job).run_id for _ in range(130)]

    result = evaluator.tick(on_failure)

    assert calls == runs
    assert [r.run_id for r in reactions(evaluator, on_failure)] == runs
    assert (result.tick.events_scanned, result.tick.reactions) == (130, 130)
    [stored] = storage.list_ticks(evaluator.state(on_failure).sensor_id)
    assert stored.reactions == 130 and stored.status == TickStatus.SUCCESS
    assert (
        stored.cursor_after
        == evaluator.state(on_failure).cursor
        >= storage.status_event_for_run(runs[-1], EventType.RUN_FAILURE).event_id
    )


# -- 5. a function that returns None -------------------------------------------------------------


def test_returning_none_writes_an_event_on_the_monitored_run(storage):
    """Given a sensor returning None, when a watched run succeeds, then that run's event log gets
    `Sensor "<name>" acted on run status SUCCESS of run <id>.`"""

    @run_status_sensor(run_status=RunStatus.SUCCESS)
    def my_slack_on_run_success(context):
        return None

    defs = Definitions(jobs=[job_a], sensors=[my_slack_on_run_success])
    evaluator = started(storage, defs, my_slack_on_run_success)
    result = run(storage, job_a)

    tick = evaluator.tick(my_slack_on_run_success).tick

    assert write_backs(storage, result.run_id) == [
        f'Sensor "my_slack_on_run_success" acted on run status SUCCESS of run {result.run_id}.'
    ]
    [reaction] = reactions(evaluator, my_slack_on_run_success)
    assert (reaction.state, reaction.attempts, reaction.error) == (ReactionState.SUCCESS, 1, None)
    assert tick.status == TickStatus.SUCCESS and tick.run_ids == []


# -- 6. run_key dedupe ---------------------------------------------------------------------------


def test_the_same_run_key_makes_one_run_within_a_page_and_across_ticks(storage):
    """Given a sensor that always requests run_key "daily", when two runs end in one tick and a
    third in a later tick, then exactly one run is requested and the others are skipped saying
    which run already has the key."""

    @run_status_sensor(RunStatus.SUCCESS, monitored_jobs=[job_a], request_job=job_b)
    def daily(context):
        return RunRequest(run_key="daily", tags={"reason": "daily"})

    defs = Definitions(jobs=[job_a], sensors=[daily])
    evaluator = started(storage, defs, daily)
    run(storage, job_a)
    run(storage, job_a)

    first = evaluator.tick(daily).tick
    run(storage, job_a)
    second = evaluator.tick(daily).tick

    [requested] = storage.list_runs(job_name="job_b")
    assert first.run_ids == [requested.run_id] and second.run_ids == []
    assert requested.tags["runsense/run_key"] == "daily"
    assert requested.tags["reason"] == "daily"
    states = [r.state for r in reactions(evaluator, daily)]
    assert states == [ReactionState.SUCCESS, ReactionState.SKIPPED, ReactionState.SKIPPED]
    message = f"run_key 'daily' already requested run {requested.run_id}"
    assert first.skip_reasons == [message] and second.skip_reasons == [message]
    assert second.status == TickStatus.SKIPPED


def test_distinct_run_keys_and_generators_request_one_run_each(storage):
    """Given a sensor yielding two requests with distinct keys per run, then both runs exist and
    a repeat of a key inside the same reaction is dropped."""

    @run_status_sensor(RunStatus.SUCCESS, monitored_jobs=[job_a], request_job=job_b)
    def fan_out(context):
        rid = context.dagster_run.run_id
        yield RunRequest(run_key=f"{rid}-1")
        yield RunRequest(run_key=f"{rid}-2")
        yield RunRequest(run_key=f"{rid}-1")

    defs = Definitions(jobs=[job_a], sensors=[fan_out])
    evaluator = started(storage, defs, fan_out)
    parent = run(storage, job_a)

    tick = evaluator.tick(fan_out).tick

    keys = sorted(r.tags["runsense/run_key"] for r in storage.list_runs(job_name="job_b"))
    assert keys == [f"{parent.run_id}-1", f"{parent.run_id}-2"]
    assert len(tick.run_ids) == 2


# -- 7. errors, retries and parking --------------------------------------------------------------


def test_a_function_that_raises_twice_then_succeeds_reacts_once_after_two_retries(storage):
    """Given a sensor that raises on its first two calls, when ticks happen as retries fall due,
    then it is not retried early, and ends with one successful reaction after 3 attempts."""
    clock = Clock()
    calls: list[str] = []

    @run_failure_sensor(retry_delay_seconds=5)
    def flaky(context):
        calls.append(context.dagster_run.run_id)
        if len(calls) <= 2:
            raise ConnectionError(f"attempt {len(calls)} failed")

    defs = Definitions(jobs=[failing_job], sensors=[flaky])
    evaluator = started(storage, defs, flaky, clock=clock)
    failed = run(storage, failing_job)

    statuses = [evaluator.tick(flaky).tick.status]
    [reaction] = reactions(evaluator, flaky)
    assert (reaction.state, reaction.attempts) == (ReactionState.RETRYING, 1)
    assert reaction.next_attempt_at == pytest.approx(clock.now + 5)
    assert "ConnectionError: attempt 1 failed" in reaction.error

    clock.advance(4)
    statuses.append(evaluator.tick(flaky).tick.status)  # not due yet
    assert len(calls) == 1
    clock.advance(1)
    statuses.append(evaluator.tick(flaky).tick.status)  # second attempt fails
    [reaction] = reactions(evaluator, flaky)
    assert (reaction.state, reaction.attempts) == (ReactionState.RETRYING, 2)
    assert reaction.next_attempt_at == pytest.approx(clock.now + 10)
    clock.advance(10)
    statuses.append(evaluator.tick(flaky).tick.status)  # third attempt succeeds

    assert calls == [failed.run_id] * 3
    [reaction] = reactions(evaluator, flaky)
    assert (reaction.state, reaction.attempts) == (ReactionState.SUCCESS, 3)
    assert reaction.next_attempt_at is None
    assert write_backs(storage, failed.run_id) == [
        f'Sensor "flaky" acted on run status FAILURE of run {failed.run_id}.'
    ]
    assert statuses == [
        TickStatus.FAILURE,
        TickStatus.SKIPPED,
        TickStatus.FAILURE,
        TickStatus.SUCCESS,
    ]
    assert storage.failed_reactions([evaluator.state(flaky).sensor_id]) == []


def test_a_raising_function_does_not_block_later_runs(storage):
    """Given a sensor that raises for one run, when two runs fail, then the cursor moves past
    both and the other run is handled in the same tick."""
    bad_runs: list[str] = []

    @run_failure_sensor
    def picky(context):
        if context.dagster_run.run_id in bad_runs:
            raise ValueError("cannot handle this one")

    defs = Definitions(jobs=[failing_job], sensors=[picky])
    evaluator = started(storage, defs, picky)
    first = run(storage, failing_job)
    bad_runs.append(first.run_id)
    second = run(storage, failing_job)

    tick = evaluator.tick(picky).tick

    assert [(r.run_id, r.state) for r in reactions(evaluator, picky)] == [
        (first.run_id, ReactionState.RETRYING),
        (second.run_id, ReactionState.SUCCESS),
    ]
    assert tick.status == TickStatus.FAILURE
    assert tick.errors == [f"run {first.run_id}: ValueError: cannot handle this one"]
    assert evaluator.lag(picky) == 0


def test_back_off_doubles_caps_at_15_minutes_then_parks_and_requeue_brings_it_back(storage):
    """Given a sensor that always raises (delay 60 s, 8 retries), when ticked whenever its retry
    is due, then the waits are 60, 120, 240, 480 and then 900 s, it is parked (DEAD) after the
    9th attempt and not called again; requeue_reactions makes it run again, and succeed."""
    clock = Clock()
    calls: list[float] = []
    fixed = {"yes": False}

    @run_failure_sensor(retry_delay_seconds=60, max_retries=8)
    def broken(context):
        calls.append(clock.now)
        if not fixed["yes"]:
            raise RuntimeError("sensor broke")

    defs = Definitions(jobs=[failing_job], sensors=[broken])
    evaluator = started(storage, defs, broken, clock=clock)
    sensor_id = evaluator.state(broken).sensor_id
    failed = run(storage, failing_job)

    waits = []
    evaluator.tick(broken)
    while True:
        [reaction] = storage.failed_reactions([sensor_id])
        if reaction.state == ReactionState.DEAD:
            break
        waits.append(round(reaction.next_attempt_at - clock.now))
        clock.now = reaction.next_attempt_at
        evaluator.tick(broken)

    assert waits == [60, 120, 240, 480, 900, 900, 900, 900]
    assert MAX_RETRY_DELAY_S == 900
    assert len(calls) == 9
    assert (reaction.attempts, reaction.next_attempt_at) == (9, None)
    assert reaction.run_id == failed.run_id and reaction.sensor == "broken"
    assert "RuntimeError: sensor broke" in reaction.error
    assert reaction.error.startswith("Traceback (most recent call last):")

    clock.advance(24 * 3600)
    parked_tick = evaluator.tick(broken).tick
    assert len(calls) == 9 and parked_tick.status == TickStatus.SKIPPED

    assert storage.requeue_reactions(sensor_id) == 1
    [requeued] = storage.failed_reactions([sensor_id])
    assert (requeued.state, requeued.attempts) == (ReactionState.RETRYING, 0)
    fixed["yes"] = True
    evaluator.tick(broken)

    assert len(calls) == 10
    assert storage.failed_reactions([sensor_id]) == []
    [done] = reactions(evaluator, broken)
    assert (done.state, done.attempts) == (ReactionState.SUCCESS, 1)
    assert len(write_backs(storage, failed.run_id)) == 1


def test_requeue_of_one_event_leaves_the_other_parked(storage):
    """Given two parked reactions, when one event is requeued, then only that one runs again."""
    calls: list[str] = []

    @run_failure_sensor(max_retries=0)
    def always_raises(context):
        calls.append(context.dagster_run.run_id)
        raise RuntimeError("sensor broke")

    defs = Definitions(jobs=[failing_job], sensors=[always_raises])
    evaluator = started(storage, defs, always_raises)
    sensor_id = evaluator.state(always_raises).sensor_id
    first_run, second_run = run(storage, failing_job), run(storage, failing_job)
    evaluator.tick(always_raises)
    first, second = storage.failed_reactions([sensor_id])
    assert {first.state, second.state} == {ReactionState.DEAD}

    assert storage.requeue_reactions(sensor_id, event_id=second.event_id) == 1
    evaluator.tick(always_raises)
    evaluator.tick(always_raises)

    assert calls == [first_run.run_id, second_run.run_id, second_run.run_id]
    assert [r.state for r in storage.failed_reactions([sensor_id])] == [ReactionState.DEAD] * 2


def test_a_permanent_error_parks_at_once(storage):
    """Given a sensor raising PermanentReactionError, then the reaction is DEAD after 1 attempt."""

    @run_failure_sensor(max_retries=5)
    def bad_auth(context):
        raise PermanentReactionError("invalid_auth")

    defs = Definitions(jobs=[failing_job], sensors=[bad_auth])
    evaluator = started(storage, defs, bad_auth)
    run(storage, failing_job)

    evaluator.tick(bad_auth)

    [reaction] = reactions(evaluator, bad_auth)
    assert (reaction.state, reaction.attempts) == (ReactionState.DEAD, 1)
    assert reaction.error == "PermanentReactionError: invalid_auth"


# -- 8. returning something that cannot work -----------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "returned", "message"),
    [
        (
            {},
            RunRequest(),
            "sensor 'misconfigured' returned a RunRequest but has no target job "
            "(add request_job=... to the sensor, or return None / SkipReason)",
        ),
        (
            {"request_jobs": [job_b, status_reporting_job]},
            RunRequest(job_name="job_c"),
            "sensor 'misconfigured' requested unknown job_name 'job_c' "
            "(its request_jobs are: job_b, status_reporting_job)",
        ),
        (
            {"request_jobs": [job_b, status_reporting_job]},
            RunRequest(),
            "sensor 'misconfigured' has several request_jobs and the RunRequest names none "
            "(set RunRequest(job_name=...))",
        ),
        (
            {"request_job": status_reporting_job},
            RunRequest(run_config={"ops": {"status_report": {"config": {"job_name": 3}}}}),
            "ops.status_report.config.job_name: expected str, got int 3",
        ),
        (
            {"request_job": job_b},
            {"job": "job_b"},
            "sensor 'misconfigured' returned {'job': 'job_b'} (return None, a RunRequest, a "
            "SkipReason, or a list of RunRequests)",
        ),
    ],
)
def test_a_return_value_that_cannot_work_is_a_dead_reaction_and_later_runs_are_handled(
    storage, kwargs, returned, message
):
    """Given a sensor returning something runsense cannot act on for the first run, when two runs
    end, then the first reaction is DEAD with a clear message, the second is handled, and the
    dead one is not called again."""
    clock = Clock()
    calls: list[str] = []

    @run_status_sensor(RunStatus.SUCCESS, name="misconfigured", monitored_jobs=[job_a], **kwargs)
    def misconfigured(context):
        calls.append(context.dagster_run.run_id)
        return returned if len(calls) == 1 else SkipReason("fine")

    defs = Definitions(jobs=[job_a], sensors=[misconfigured])
    evaluator = started(storage, defs, misconfigured, clock=clock)
    first, second = run(storage, job_a), run(storage, job_a)

    tick = evaluator.tick(misconfigured).tick
    clock.advance(3600)
    evaluator.tick(misconfigured)

    dead, handled = reactions(evaluator, misconfigured)
    assert (dead.run_id, dead.state, dead.error) == (first.run_id, ReactionState.DEAD, message)
    assert (handled.run_id, handled.state) == (second.run_id, ReactionState.SKIPPED)
    assert tick.status == TickStatus.FAILURE
    assert tick.errors == [f"run {first.run_id}: {message}"]
    assert calls == [first.run_id, second.run_id]
    assert storage.list_runs(job_name="job_b") == []
    assert storage.list_runs(job_name="status_reporting_job") == []


# -- 9. loops stop at the chain-depth limit ------------------------------------------------------


def test_a_sensor_requesting_its_own_job_stops_at_the_chain_depth_limit(storage):
    """Given a sensor that requests its own job on every success (no guard) and a limit of 3,
    when each requested run is executed, then the chain stops after depth 3 with a failed
    reaction that names the loop and its root run."""

    @job
    def loop_job():
        work()

    @run_status_sensor(RunStatus.SUCCESS, monitored_jobs=[loop_job], request_job=loop_job)
    def feedback(context):
        return RunRequest()

    defs = Definitions(jobs=[loop_job], sensors=[feedback])
    evaluator = started(storage, defs, feedback, max_chain_depth=3)
    root = run(storage, loop_job)

    chain = [root.run_id]
    for _ in range(10):
        requested = evaluator.tick(feedback).tick.run_ids
        if not requested:
            break
        assert len(requested) == 1
        chain += requested
        run_queued(storage, defs, requested)

    depths = [storage.get_run(r).tags.get("runsense/depth") for r in chain]
    assert depths == [None, "1", "2", "3"]
    for parent, child in pairwise(chain):
        record = storage.get_run(child)
        assert (record.parent_run_id, record.root_run_id) == (parent, root.run_id)
        assert record.tags["runsense/root_run_id"] == root.run_id
    last = reactions(evaluator, feedback)[-1]
    assert (last.run_id, last.state) == (chain[-1], ReactionState.DEAD)
    assert last.error == (
        "chain-depth limit 3 reached: sensor 'feedback' keeps requesting 'loop_job' from runs "
        f"it requested (loop from root run {root.run_id}) "
        "(make the sensor skip the runs of the jobs it requests)"
    )
    assert len(storage.list_runs(job_name="loop_job", limit=None)) == 4


# -- 10. stopping keeps the cursor ---------------------------------------------------------------


def test_stop_then_two_failures_then_start_handles_both(storage):
    """Given a started sensor that is stopped, when two runs fail and it is started again, then
    both failures are waiting and one tick handles them."""

    @run_failure_sensor
    def on_failure(context):
        pass

    defs = Definitions(jobs=[failing_job], sensors=[on_failure])
    evaluator = started(storage, defs, on_failure)
    sensor_id = evaluator.state(on_failure).sensor_id
    storage.set_sensor_status(sensor_id, SensorStatus.STOPPED)
    failures = [run(storage, failing_job).run_id for _ in range(2)]

    start(evaluator, on_failure)
    assert evaluator.lag(on_failure) == 2
    evaluator.tick(on_failure)

    assert [r.run_id for r in reactions(evaluator, on_failure)] == failures


def test_starting_from_now_skips_what_happened_while_stopped(storage):
    """Given a stopped sensor with two waiting failures, when it is started with the cursor at
    the newest event, then a tick handles none of them."""

    @run_failure_sensor
    def on_failure(context):
        pass

    defs = Definitions(jobs=[failing_job], sensors=[on_failure])
    evaluator = started(storage, defs, on_failure)
    sensor_id = evaluator.state(on_failure).sensor_id
    storage.set_sensor_status(sensor_id, SensorStatus.STOPPED)
    run(storage, failing_job)
    run(storage, failing_job)

    storage.set_sensor_status(sensor_id, SensorStatus.RUNNING, cursor=storage.newest_event_id())
    tick = evaluator.tick(on_failure).tick

    assert evaluator.lag(on_failure) == 0
    assert reactions(evaluator, on_failure) == []
    assert tick.reactions == 0 and tick.status == TickStatus.SKIPPED


# -- 11. one tick at a time across processes -----------------------------------------------------

SLOW_PROJECT = """
import os, time
from runsense_cli import Definitions, RunRequest, RunStatus, job, op, run_status_sensor

@op
def work():
    return 1

@job
def watched():
    work()

@job
def followup():
    work()

@run_status_sensor(RunStatus.SUCCESS, monitored_jobs=[watched], request_job=followup)
def slow_reporter(context):
    path = os.environ["CALLS_FILE"]
    with open(path, "a") as handle:
        handle.write(context.dagster_run.run_id + "\\n")
    crash_at = int(os.environ.get("CRASH_AT", "0"))
    if crash_at:
        with open(path) as handle:
            if sum(1 for _ in handle) == crash_at:
                os._exit(9)
    time.sleep(0.002)
    return RunRequest()

defs = Definitions(jobs=[watched], sensors=[slow_reporter])
"""

TICKER = """
import json, sys, time
from pathlib import Path
from runsense_cli.evaluation import SensorEvaluator
from runsense_cli.project import find_project, load_project
from runsense_cli.storage import Storage, open_storage
from runsense_cli.storage.sqlite import SqliteStorage

defs = load_project(find_project(file=sys.argv[1]))
go = Path(sys.argv[2])
evaluator = SensorEvaluator(open_storage(), defs, page_size=int(sys.argv[3]))
print("ready", flush=True)
while not go.exists():
    time.sleep(0.002)
result = evaluator.tick(defs.get_sensor("slow_reporter"), lease_wait=30)
print(json.dumps({"reactions": result.tick.reactions, "runs": result.tick.runs_requested}))
"""


@pytest.fixture
def slow_project(project, tmp_path, monkeypatch, storage):
    """The project above loaded here, its sensor started, and a file its function logs calls to."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    calls = tmp_path / "calls.txt"
    monkeypatch.setenv("CALLS_FILE", str(calls))
    path = project(SLOW_PROJECT)
    defs = load_project(find_project(file=str(path)))
    sensor = defs.get_sensor("slow_reporter")
    evaluator = started(storage, defs, sensor)
    yield path, defs, evaluator, sensor, calls
    sys.modules.pop(path.stem, None)


def spawn_ticker(tmp_path: Path, path: Path, go: Path, page_size: int, **env: str):
    script = tmp_path / "ticker.py"
    script.write_text(TICKER)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(path), str(go), str(page_size)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
    )
    assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
    return proc


def test_two_processes_ticking_the_same_sensor_handle_each_event_once(slow_project, tmp_path):
    """Given 120 waiting runs, when two processes tick the same sensor at the same moment, then
    one does the work while the other waits for the lease and finds nothing left: every run has
    one reaction, one call and one requested run."""
    path, defs, evaluator, sensor, calls = slow_project
    storage = evaluator.storage
    parents = [run(storage, defs.get_job("watched")).run_id for _ in range(120)]
    go = tmp_path / "go"

    procs = [spawn_ticker(tmp_path, path, go, page_size=25) for _ in range(2)]
    go.touch()
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        outputs.append(json.loads(out.strip().splitlines()[-1]))

    assert sorted(o["reactions"] for o in outputs) == [0, 120]
    assert sorted(o["runs"] for o in outputs) == [0, 120]
    assert calls.read_text().split() == parents
    assert [r.run_id for r in reactions(evaluator, sensor)] == parents
    followups = storage.list_runs(job_name="followup", limit=None)
    assert sorted(r.parent_run_id for r in followups) == sorted(parents)


def test_a_tick_refuses_while_another_live_process_holds_the_lease(storage):
    """Given the sensor's lease held by another live process, when ticking, then after waiting
    briefly it raises SensorBusyError and stores nothing."""

    @run_failure_sensor
    def on_failure(context):
        pass

    defs = Definitions(jobs=[failing_job], sensors=[on_failure])
    evaluator = started(storage, defs, on_failure)
    sensor_id = evaluator.state(on_failure).sensor_id
    run(storage, failing_job)
    assert storage.acquire_lease(sensor_id, "someone-else", 60, str(ProcessId.of(os.getppid())))

    with pytest.raises(SensorBusyError, match="sensor 'on_failure' is busy"):
        evaluator.tick(on_failure, lease_wait=0.1)

    assert reactions(evaluator, on_failure) == []
    assert storage.list_ticks(sensor_id) == []
    storage.release_lease(sensor_id, "someone-else")
    assert evaluator.tick(on_failure).tick.reactions == 1


def test_a_tick_with_nothing_new_takes_no_lease_unless_a_tick_holds_it(storage):
    """Given nothing after the cursor, a tick records one SKIPPED "no new events" tick in one
    commit and leaves no lease; while another live process holds the lease it waits and says
    the sensor is busy, as a tick with work does; a stopped sensor's tick records nothing."""

    @run_failure_sensor
    def on_failure(context):
        pass

    defs = Definitions(jobs=[failing_job], sensors=[on_failure])
    evaluator = started(storage, defs, on_failure)
    state = evaluator.state(on_failure)

    idle = evaluator.tick(on_failure).tick
    assert (idle.status, idle.skip_reasons, idle.cursor_after) == (
        TickStatus.SKIPPED,
        ["no new events"],
        state.cursor,
    )
    assert storage.list_ticks(state.sensor_id) == [idle]
    assert storage.acquire_lease(state.sensor_id, "mine", 15, str(ProcessId.of()))  # none left
    storage.release_lease(state.sensor_id, "mine")

    assert storage.acquire_lease(
        state.sensor_id, "someone-else", 60, str(ProcessId.of(os.getppid()))
    )
    with pytest.raises(SensorBusyError):
        evaluator.tick(on_failure, lease_wait=0.1)
    storage.release_lease(state.sensor_id, "someone-else")
    storage.set_sensor_status(state.sensor_id, SensorStatus.STOPPED)
    assert evaluator.tick(on_failure).tick.tick_id == 0
    assert storage.list_ticks(state.sensor_id) == [idle]


# -- crashes replay the page, never duplicate -----------------------------------------------------


def test_a_process_killed_mid_page_replays_that_page_without_duplicates(slow_project, tmp_path):
    """Given 60 waiting runs and pages of 20, when the ticking process dies (os._exit) in the
    middle of the second page, then the first page is stored, the next tick takes over the dead
    process's lease and replays the second page: one reaction and one requested run per run,
    while the function ran again for the replayed calls (at least once)."""
    path, defs, evaluator, sensor, calls = slow_project
    storage = evaluator.storage
    parents = [run(storage, defs.get_job("watched")).run_id for _ in range(60)]
    go = tmp_path / "go"
    go.touch()

    proc = spawn_ticker(tmp_path, path, go, page_size=20, CRASH_AT="30")
    proc.communicate(timeout=60)
    assert proc.returncode == 9

    assert [r.run_id for r in reactions(evaluator, sensor)] == parents[:20]
    assert len(storage.list_runs(job_name="followup", limit=None)) == 20
    assert evaluator.lag(sensor) == 40

    result = evaluator.tick(sensor, lease_wait=0)

    assert result.tick.reactions == 40
    assert [r.run_id for r in reactions(evaluator, sensor)] == parents
    followups = storage.list_runs(job_name="followup", limit=None)
    assert sorted(r.parent_run_id for r in followups) == sorted(parents)
    call_counts = Counter(calls.read_text().split())
    assert {rid for rid, n in call_counts.items() if n == 2} == set(parents[20:30])
    assert all(call_counts[rid] == 1 for rid in parents[:20] + parents[30:])


class SimulatedCrash(BaseException):
    """The process dying between a page's writes and its COMMIT."""


class CrashOnPage(SqliteStorage):
    """Storage whose Nth page commit dies after writing everything but before COMMIT."""

    crash_on: int = 0
    pages: int = 0

    def commit_page(self, *args, **kwargs):
        self.pages += 1
        with self.transaction():
            result = super().commit_page(*args, **kwargs)  # joins this transaction
            if self.pages == self.crash_on:
                raise SimulatedCrash
        return result


def test_a_crash_before_a_page_commits_stores_none_of_it_and_the_page_is_replayed(home):
    """Given a crash just before the 2nd page's COMMIT, then none of that page's reactions,
    requested runs, run keys or cursor move is stored, and the next tick redoes it exactly once."""

    @run_status_sensor(RunStatus.SUCCESS, monitored_jobs=[job_a], request_job=job_b)
    def keyed(context):
        return [RunRequest(run_key=context.dagster_run.run_id), RunRequest()]

    defs = Definitions(jobs=[job_a], sensors=[keyed])
    with CrashOnPage.open_home() as storage:
        evaluator = started(storage, defs, keyed, page_size=10)
        parents = [run(storage, job_a).run_id for _ in range(25)]
        storage.crash_on = 2

        with pytest.raises(SimulatedCrash):
            evaluator.tick(keyed)

        assert len(reactions(evaluator, keyed)) == 10
        assert len(storage.list_runs(job_name="job_b", limit=None)) == 20
        assert evaluator.lag(keyed) == 15
        [crashed] = storage.list_ticks(evaluator.state(keyed).sensor_id)
        assert crashed.reactions == 10

        result = evaluator.tick(keyed)

        assert result.tick.reactions == 15
        assert [r.run_id for r in reactions(evaluator, keyed)] == parents
        job_b_runs = storage.list_runs(job_name="job_b", limit=None)
        assert len(job_b_runs) == 50
        assert Counter(r.parent_run_id for r in job_b_runs) == {p: 2 for p in parents}
        keys = [r.tags["runsense/run_key"] for r in job_b_runs if "runsense/run_key" in r.tags]
        assert sorted(keys) == sorted(parents)


# -- what a tick records ------------------------------------------------------------------------


def test_tick_records_success_skipped_and_failure_with_their_fields(storage):
    """Given one sensor, when it ticks over nothing, over skips, over requests and over a
    failure, then each tick's status, counts, run ids, reasons, errors and cursors are stored."""
    mode = {"value": "skip"}

    @run_status_sensor(RunStatus.SUCCESS, monitored_jobs=[job_a], request_job=job_b)
    def recorder(context):
        if mode["value"] == "skip":
            return SkipReason(f"skip {context.dagster_run.run_id[:8]}")
        if mode["value"] == "raise":
            raise RuntimeError("recorder broke")
        return RunRequest()

    defs = Definitions(jobs=[job_a], sensors=[recorder])
    evaluator = started(storage, defs, recorder)
    sensor_id = evaluator.state(recorder).sensor_id
    start_cursor = evaluator.state(recorder).cursor

    empty = evaluator.tick(recorder).tick

    skipped_runs = [run(storage, job_a).run_id for _ in range(2)]
    skipped = evaluator.tick(recorder).tick

    mode["value"] = "request"
    run(storage, job_b)  # not watched: scanned past, never reacted to
    requested_run = run(storage, job_a).run_id
    requested = evaluator.tick(recorder).tick

    mode["value"] = "raise"
    failed_run = run(storage, job_a).run_id
    failed = evaluator.tick(recorder).tick

    stored = {t.tick_id: t for t in storage.list_ticks(sensor_id)}
    assert [t.tick_id for t in storage.list_ticks(sensor_id)] == [
        failed.tick_id,
        requested.tick_id,
        skipped.tick_id,
        empty.tick_id,
    ]
    for tick in (empty, skipped, requested, failed):
        assert stored[tick.tick_id] == tick

    assert (empty.status, empty.events_scanned, empty.reactions) == (TickStatus.SKIPPED, 0, 0)
    assert empty.skip_reasons == ["no new events"]
    assert empty.cursor_before == empty.cursor_after == start_cursor

    assert (skipped.status, skipped.events_scanned, skipped.reactions) == (
        TickStatus.SKIPPED,
        2,
        2,
    )
    assert skipped.skip_reasons == [f"skip {r[:8]}" for r in skipped_runs]
    assert skipped.cursor_before == start_cursor
    assert (
        skipped.cursor_after
        == storage.status_event_for_run(skipped_runs[-1], EventType.RUN_SUCCESS).event_id
    )

    assert (requested.status, requested.events_scanned, requested.reactions) == (
        TickStatus.SUCCESS,
        1,
        1,
    )
    [new_run] = requested.run_ids
    assert storage.get_run(new_run).parent_run_id == requested_run
    assert requested.cursor_before == skipped.cursor_after
    assert requested.cursor_after > requested.cursor_before
    assert requested.errors == [] and requested.skip_reasons == []

    assert (failed.status, failed.reactions, failed.run_ids) == (TickStatus.FAILURE, 1, [])
    assert failed.errors == [f"run {failed_run}: RuntimeError: recorder broke"]
    assert failed.cursor_before == requested.cursor_after
    assert failed.cursor_after == storage.newest_event_id()
    assert all(t.duration_s >= 0 for t in stored.values())
    assert evaluator.state(recorder).cursor == failed.cursor_after


def test_a_tick_over_only_other_jobs_events_moves_the_cursor_and_is_skipped(storage):
    """Given only runs of jobs a sensor does not watch, when it ticks, then nothing reacts, the
    tick is SKIPPED, and the cursor moves past those events so they are not scanned again."""

    @run_status_sensor(RunStatus.SUCCESS, monitored_jobs=[job_a])
    def only_a(context):
        raise AssertionError("must not be called")

    defs = Definitions(jobs=[job_a, job_b], sensors=[only_a])
    evaluator = started(storage, defs, only_a)
    run(storage, job_b)

    tick = evaluator.tick(only_a).tick

    assert (tick.status, tick.events_scanned, tick.reactions) == (TickStatus.SKIPPED, 0, 0)
    assert tick.cursor_after == storage.newest_event_id() > tick.cursor_before
    assert evaluator.state(only_a).cursor == tick.cursor_after


def test_a_long_page_renews_the_lease_so_no_other_process_can_take_it(storage, monkeypatch):
    """Given reactions slower than a third of the lease, the lease is pushed out mid-page."""
    import runsense_cli.leases as leases

    monkeypatch.setattr(leases, "LEASE_TTL_S", 0.15)
    expiries = []

    @run_failure_sensor
    def slow(context):
        time.sleep(0.06)
        with storage.reopen() as other:
            expiries.append(other._one("SELECT lease_expires FROM sensors")[0])

    defs = Definitions(jobs=[failing_job], sensors=[slow])
    evaluator = started(storage, defs, slow)
    for _ in range(6):
        run(storage, failing_job)
    evaluator.tick(slow)
    assert len(reactions(evaluator, slow)) == 6
    assert len(set(expiries)) > 1  # renewed during the page


def test_a_sensor_error_traceback_starts_in_user_code(storage):
    @run_failure_sensor
    def breaks(context):
        raise KeyError("missing")

    defs = Definitions(jobs=[failing_job], sensors=[breaks])
    evaluator = started(storage, defs, breaks)
    run(storage, failing_job)
    evaluator.tick(breaks)
    [reaction] = reactions(evaluator, breaks)
    assert "in breaks" in reaction.error and "KeyError: 'missing'" in reaction.error
    assert "runsense_cli/evaluation.py" not in reaction.error
    assert "runsense_cli/sensors.py" not in reaction.error


def test_a_sensor_call_slower_than_the_lease_keeps_it(storage, monkeypatch):
    """A call longer than the lease (a Slack post waiting out a rate limit) must not let another
    daemon take the sensor and start the same page: the lease is kept alive while it runs."""
    monkeypatch.setenv("RUNSENSE_LEASE_TTL", "0.3")
    stolen: list[bool] = []
    ids: dict[str, int] = {}

    @run_failure_sensor
    def slow(context):
        time.sleep(1.0)
        with storage.reopen() as other:
            stolen.append(other.acquire_lease(ids["sensor"], "thief", 15, "elsewhere/1/1/x"))

    defs = Definitions(jobs=[failing_job], sensors=[slow])
    evaluator = started(storage, defs, slow)
    ids["sensor"] = evaluator.state(slow).sensor_id
    run(storage, failing_job)
    result = evaluator.tick(slow)
    assert stolen == [False] and result.tick.reactions == 1
