"""Run status sensors ticked through the library: cursors, outcomes, retries, dedupe, loops."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from runsense_cli import (
    DagsterRunStatus,
    Definitions,
    RunRequest,
    RunStatus,
    SkipReason,
    job,
    op,
    run_failure_sensor,
    run_status_sensor,
)
from runsense_cli.evaluation import SensorEvaluator
from runsense_cli.execution import execute_run
from runsense_cli.records import ReactionState, SensorStatus, TickStatus
from runsense_cli.storage import Storage


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
    return context.op_config["job_name"]


@job
def status_reporting_job():
    status_report()


@run_status_sensor(run_status=DagsterRunStatus.SUCCESS, request_job=status_reporting_job)
def report_status_sensor(context):
    if context.dagster_run.job_name != status_reporting_job.name:
        run_config = {
            "ops": {"status_report": {"config": {"job_name": context.dagster_run.job_name}}}
        }
        return RunRequest(run_key=None, run_config=run_config)
    return SkipReason("Don't report status of status_reporting_job")


def started(defs: Definitions, *sensors, **kwargs) -> SensorEvaluator:
    """An evaluator over the test home with `sensors` started now."""
    evaluator = SensorEvaluator(Storage.open(), defs, **kwargs)
    evaluator.register_sensors()
    for sensor in sensors:
        state = evaluator.state(sensor)
        evaluator.storage.set_sensor_status(
            state.sensor_id, SensorStatus.RUNNING, cursor=evaluator.storage.newest_event_id()
        )
    return evaluator


def reactions(evaluator: SensorEvaluator, sensor):
    return evaluator.storage.reactions_for(evaluator.state(sensor).sensor_id)


def test_runs_before_the_start_never_fire_and_runs_after_always_do():
    defs = Definitions(jobs=[job_a], sensors=[report_status_sensor])
    before = job_a.execute_in_process()
    evaluator = started(defs, report_status_sensor)
    after = job_a.execute_in_process()
    tick = evaluator.tick(report_status_sensor).tick
    assert [r.run_id for r in reactions(evaluator, report_status_sensor)] == [after.run_id]
    assert before.run_id not in {r.run_id for r in reactions(evaluator, report_status_sensor)}
    assert tick.status == TickStatus.SUCCESS and len(tick.run_ids) == 1
    requested = evaluator.storage.get_run(tick.run_ids[0])
    assert requested.status == RunStatus.QUEUED
    assert requested.run_config == {"ops": {"status_report": {"config": {"job_name": "job_a"}}}}
    assert requested.tags["runsense/sensor"] == "report_status_sensor"
    assert requested.tags["runsense/parent_run_id"] == after.run_id
    assert requested.tags["runsense/root_run_id"] == after.run_id
    assert requested.tags["runsense/depth"] == "1"


def test_success_and_started_sensors_see_success_only_started_sees_failure():
    seen: dict[str, list[str]] = {"success": [], "started": []}

    @run_status_sensor(run_status=RunStatus.SUCCESS)
    def on_success(context):
        seen["success"].append(context.dagster_run.job_name)

    @run_status_sensor(run_status=RunStatus.STARTED)
    def on_started(context):
        seen["started"].append(context.dagster_run.job_name)

    defs = Definitions(jobs=[job_a, failing_job], sensors=[on_success, on_started])
    evaluator = started(defs, on_success, on_started)
    job_a.execute_in_process()
    failing_job.execute_in_process()
    evaluator.tick(on_success)
    evaluator.tick(on_started)
    assert seen == {"success": ["job_a"], "started": ["job_a", "failing_job"]}


def test_monitored_jobs_and_locations():
    calls: dict[str, list[str]] = {"only_a": [], "own": [], "all": [], "other": []}

    def recorder(key):
        return lambda context: calls[key].append(
            f"{context.dagster_run.location}:{context.dagster_run.job_name}"
        )

    only_a = run_status_sensor(RunStatus.SUCCESS, name="only_a", monitored_jobs=[job_a])(
        recorder("only_a")
    )
    own = run_status_sensor(RunStatus.SUCCESS, name="own")(recorder("own"))
    every = run_status_sensor(RunStatus.SUCCESS, name="all", monitor_all_code_locations=True)(
        recorder("all")
    )
    other = run_status_sensor(RunStatus.SUCCESS, name="other", monitored_jobs=["loc_b:job_b"])(
        recorder("other")
    )
    defs_a = Definitions(jobs=[job_a], sensors=[only_a, own, every, other])
    defs_a.set_location("loc_a")
    evaluator = started(defs_a, only_a, own, every, other)
    job_a.execute_in_process()
    defs_b = Definitions(jobs=[job_b])
    defs_b.set_location("loc_b")
    job_b.execute_in_process()
    # a job of loc_a that is not job_a
    defs_a_extra = Definitions(jobs=[job_b])
    defs_a_extra.set_location("loc_a")
    job_b.execute_in_process()
    for sensor in (only_a, own, every, other):
        evaluator.tick(sensor)
    assert calls["only_a"] == ["loc_a:job_a"]
    assert calls["own"] == ["loc_a:job_a", "loc_a:job_b"]
    assert calls["all"] == ["loc_a:job_a", "loc_b:job_b", "loc_a:job_b"]
    assert calls["other"] == ["loc_b:job_b"]


def test_a_backlog_of_500_runs_is_drained_in_one_tick_across_pages():
    defs = Definitions(jobs=[job_a], sensors=[report_status_sensor])
    evaluator = started(defs, report_status_sensor, page_size=64)
    for _ in range(500):
        job_a.execute_in_process()
    tick = evaluator.tick(report_status_sensor).tick
    assert tick.events_scanned == 500 and tick.reactions == 500 and len(tick.run_ids) == 500
    queued = evaluator.storage.list_runs(job_name="status_reporting_job", limit=None)
    assert len(queued) == 500 and {r.status for r in queued} == {RunStatus.QUEUED}
    assert evaluator.lag(report_status_sensor) == 0
    # the requested runs' own successes are skipped by the seed's guard
    for run in queued[:3]:
        assert evaluator.storage.claim_run(run.run_id, RunStatus.QUEUED, os.getpid())
        execute_run(evaluator.storage, status_reporting_job, evaluator.storage.get_run(run.run_id))
    tick = evaluator.tick(report_status_sensor).tick
    assert tick.status == TickStatus.SKIPPED
    assert tick.skip_reasons == ["Don't report status of status_reporting_job"] * 3


def test_none_writes_an_event_on_the_monitored_run():
    @run_failure_sensor
    def quiet(context):
        return None

    defs = Definitions(jobs=[failing_job], sensors=[quiet])
    evaluator = started(defs, quiet)
    result = failing_job.execute_in_process()
    evaluator.tick(quiet)
    messages = [e.message for e in evaluator.storage.events_for_run(result.run_id)]
    assert messages[-1] == f'Sensor "quiet" acted on run status FAILURE of run {result.run_id}.'


def test_a_run_key_creates_one_run_within_a_page_and_across_ticks():
    @run_status_sensor(run_status=RunStatus.SUCCESS, request_job=job_b, monitored_jobs=[job_a])
    def keyed(context):
        return RunRequest(run_key="daily")

    defs = Definitions(jobs=[job_a], sensors=[keyed])
    evaluator = started(defs, keyed)
    job_a.execute_in_process()
    job_a.execute_in_process()
    first = evaluator.tick(keyed).tick
    job_a.execute_in_process()
    second = evaluator.tick(keyed).tick
    assert len(first.run_ids) == 1 and second.run_ids == []
    assert len(evaluator.storage.list_runs(job_name="job_b")) == 1
    assert "run_key 'daily' already requested run" in second.skip_reasons[0]


def test_a_raising_sensor_is_retried_with_backoff_then_succeeds():
    attempts = []
    now = [1000.0]

    @run_failure_sensor(retry_delay_seconds=10, max_retries=5)
    def flaky(context):
        attempts.append(now[0])
        if len(attempts) <= 2:
            raise ConnectionError("try later")

    defs = Definitions(jobs=[failing_job], sensors=[flaky])
    evaluator = started(defs, flaky, clock=lambda: now[0])
    failing_job.execute_in_process()
    assert evaluator.tick(flaky).tick.status == TickStatus.FAILURE
    [reaction] = reactions(evaluator, flaky)
    assert (reaction.state, reaction.attempts, reaction.next_attempt_at) == (
        ReactionState.RETRYING,
        1,
        1010.0,
    )
    assert "ConnectionError: try later" in reaction.error
    now[0] = 1005.0
    evaluator.tick(flaky)
    assert len(attempts) == 1  # not due yet
    now[0] = 1010.0
    evaluator.tick(flaky)
    [reaction] = reactions(evaluator, flaky)
    assert (reaction.attempts, reaction.next_attempt_at) == (2, 1030.0)  # the delay doubled
    now[0] = 1030.0
    evaluator.tick(flaky)
    [reaction] = reactions(evaluator, flaky)
    assert (reaction.state, reaction.attempts) == (ReactionState.SUCCESS, 3)


def test_an_always_raising_sensor_is_parked_then_retried_by_command():
    fixed = {"yes": False}

    @run_failure_sensor(retry_delay_seconds=0, max_retries=2)
    def broken(context):
        if not fixed["yes"]:
            raise RuntimeError("still broken")

    defs = Definitions(jobs=[failing_job], sensors=[broken])
    evaluator = started(defs, broken)
    failing_job.execute_in_process()
    for _ in range(4):
        evaluator.tick(broken)
    [reaction] = reactions(evaluator, broken)
    assert (reaction.state, reaction.attempts) == (ReactionState.DEAD, 3)
    sensor_id = evaluator.state(broken).sensor_id
    assert [r.state for r in evaluator.storage.failed_reactions([sensor_id])] == [
        ReactionState.DEAD
    ]
    fixed["yes"] = True
    assert evaluator.storage.requeue_reactions(sensor_id) == 1
    evaluator.tick(broken)
    [reaction] = reactions(evaluator, broken)
    assert reaction.state == ReactionState.SUCCESS
    assert evaluator.storage.failed_reactions([sensor_id]) == []


def test_backoff_is_capped_at_fifteen_minutes():
    now = [0.0]

    @run_failure_sensor(retry_delay_seconds=400, max_retries=10)
    def slow(context):
        raise RuntimeError("x")

    defs = Definitions(jobs=[failing_job], sensors=[slow])
    evaluator = started(defs, slow, clock=lambda: now[0])
    failing_job.execute_in_process()
    delays = []
    for _ in range(4):
        evaluator.tick(slow)
        [reaction] = reactions(evaluator, slow)
        delays.append(reaction.next_attempt_at - now[0])
        now[0] = reaction.next_attempt_at
    assert delays == [400, 800, 900, 900]


def test_invalid_returns_are_parked_failures_and_later_events_still_flow():
    @run_status_sensor(run_status=RunStatus.SUCCESS, monitored_jobs=[job_a])
    def no_target(context):
        return RunRequest()

    @run_status_sensor(run_status=RunStatus.SUCCESS, request_jobs=[job_b], monitored_jobs=[job_a])
    def wrong_name(context):
        return RunRequest(job_name="nope")

    defs = Definitions(jobs=[job_a], sensors=[no_target, wrong_name])
    evaluator = started(defs, no_target, wrong_name)
    job_a.execute_in_process()
    job_a.execute_in_process()
    evaluator.tick(no_target)
    evaluator.tick(wrong_name)
    first = reactions(evaluator, no_target)
    second = reactions(evaluator, wrong_name)
    assert len(first) == len(second) == 2
    assert {r.state for r in first + second} == {ReactionState.DEAD}
    assert "returned a RunRequest but has no target job" in first[0].error
    assert "requested unknown job_name 'nope'" in second[0].error
    assert evaluator.lag(no_target) == 0


def test_a_self_triggering_sensor_stops_at_the_chain_depth_limit():
    @run_status_sensor(run_status=RunStatus.SUCCESS, request_job=job_a)
    def loop(context):
        return RunRequest()

    defs = Definitions(jobs=[job_a], sensors=[loop])
    evaluator = started(defs, loop, max_chain_depth=3)
    job_a.execute_in_process()
    for _ in range(6):
        evaluator.tick(loop)
        for run in evaluator.storage.runs_with_status([RunStatus.QUEUED]):
            evaluator.storage.claim_run(run.run_id, RunStatus.QUEUED, os.getpid())
            execute_run(evaluator.storage, job_a, evaluator.storage.get_run(run.run_id))
    assert len(evaluator.storage.list_runs(job_name="job_a", limit=None)) == 4  # root + 3
    dead = [r for r in reactions(evaluator, loop) if r.state == ReactionState.DEAD]
    assert len(dead) == 1 and "chain-depth limit 3 reached" in dead[0].error


def test_stop_keeps_the_cursor_and_from_now_skips_the_backlog():
    @run_failure_sensor
    def alert(context):
        return None

    defs = Definitions(jobs=[failing_job], sensors=[alert])
    evaluator = started(defs, alert)
    sensor_id = evaluator.state(alert).sensor_id
    evaluator.storage.set_sensor_status(sensor_id, SensorStatus.STOPPED)
    failing_job.execute_in_process()
    failing_job.execute_in_process()
    evaluator.storage.set_sensor_status(sensor_id, SensorStatus.RUNNING)
    assert evaluator.lag(alert) == 2
    assert evaluator.tick(alert).tick.reactions == 2
    evaluator.storage.set_sensor_status(sensor_id, SensorStatus.STOPPED)
    failing_job.execute_in_process()
    evaluator.storage.set_sensor_status(
        sensor_id, SensorStatus.RUNNING, cursor=evaluator.storage.newest_event_id()
    )
    assert evaluator.tick(alert).tick.reactions == 0


def test_two_processes_ticking_one_sensor_handle_each_event_once(tmp_path, home):
    """Given 300 waiting failures, when two processes tick at once, then 300 reactions, no more."""
    module = tmp_path / "two_tickers.py"
    module.write_text(
        textwrap.dedent(
            """
            import sys
            from runsense_cli import Definitions, job, op, run_failure_sensor
            from runsense_cli.evaluation import SensorEvaluator
            from runsense_cli.errors import SensorBusyError
            from runsense_cli.storage import Storage

            @op
            def fail():
                raise RuntimeError("x")

            @job
            def failing_job():
                fail()

            @run_failure_sensor
            def alert(context):
                return None

            defs = Definitions(jobs=[failing_job], sensors=[alert])
            defs.set_location("two_tickers")
            if __name__ == "__main__":
                evaluator = SensorEvaluator(Storage.open(), defs, page_size=25)
                for _ in range(20):
                    try:
                        evaluator.tick(alert, lease_wait=5)
                    except SensorBusyError:
                        pass
            """
        )
    )
    sys.path.insert(0, str(tmp_path))
    try:
        import two_tickers
    finally:
        sys.path.remove(str(tmp_path))
    evaluator = started(two_tickers.defs, two_tickers.alert)
    for _ in range(300):
        two_tickers.failing_job.execute_in_process()
    env = {**os.environ, "RUNSENSE_HOME": str(home)}
    procs = [subprocess.Popen([sys.executable, str(module)], env=env) for _ in range(2)]
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    found = reactions(evaluator, two_tickers.alert)
    assert len(found) == 300 and len({r.event_id for r in found}) == 300
    writes = evaluator.storage.db.execute(
        "SELECT count(*) FROM events WHERE event_type = 'SENSOR_REACTION'"
    ).fetchone()[0]
    assert writes == 300


def test_a_crash_before_the_page_commit_replays_the_page_without_duplicates(monkeypatch):
    defs = Definitions(jobs=[job_a], sensors=[report_status_sensor])
    evaluator = started(defs, report_status_sensor, page_size=10)
    for _ in range(25):
        job_a.execute_in_process()
    real_commit = Storage.commit_page
    calls = {"n": 0}

    def crashing_commit(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("simulated crash")
        return real_commit(self, *args, **kwargs)

    monkeypatch.setattr(Storage, "commit_page", crashing_commit)
    with pytest.raises(KeyboardInterrupt):
        evaluator.tick(report_status_sensor)
    monkeypatch.setattr(Storage, "commit_page", real_commit)
    assert len(reactions(evaluator, report_status_sensor)) == 10
    evaluator.tick(report_status_sensor)
    found = reactions(evaluator, report_status_sensor)
    assert len(found) == 25 and len({r.event_id for r in found}) == 25
    assert len(evaluator.storage.list_runs(job_name="status_reporting_job", limit=None)) == 25


def test_a_long_page_renews_the_lease_so_no_other_process_can_take_it(monkeypatch):
    """Given reactions slower than a quarter of the lease, the lease is pushed out mid-page."""
    import runsense_cli.evaluation as evaluation

    monkeypatch.setattr(evaluation, "LEASE_TTL_S", 0.2)
    expiries = []

    @run_failure_sensor
    def slow(context):
        import time as clock

        clock.sleep(0.06)
        [(expires,)] = context.instance.db.execute("SELECT lease_expires FROM sensors").fetchall()
        expiries.append(expires)

    defs = Definitions(jobs=[failing_job], sensors=[slow])
    evaluator = started(defs, slow)
    for _ in range(6):
        failing_job.execute_in_process()
    evaluator.tick(slow)
    assert len(reactions(evaluator, slow)) == 6
    assert len(set(expiries)) > 1  # renewed during the page


def test_a_sensor_error_traceback_starts_in_user_code():
    @run_failure_sensor
    def breaks(context):
        raise KeyError("missing")

    defs = Definitions(jobs=[failing_job], sensors=[breaks])
    evaluator = started(defs, breaks)
    failing_job.execute_in_process()
    evaluator.tick(breaks)
    [reaction] = reactions(evaluator, breaks)
    assert "in breaks" in reaction.error and "KeyError: 'missing'" in reaction.error
    assert "evaluation.py" not in reaction.error and "sensors.py" not in reaction.error
