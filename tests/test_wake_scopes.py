"""Wake-ups that name their events: a daemon's woken pass reads nothing when the events committed
concern none of its running sensors (on a busy database most commits are other jobs' runs), and
still reacts at once to those that do."""

from __future__ import annotations

import itertools

import pytest

from runsense_cli.daemon import Daemon
from runsense_cli.evaluation import SensorEvaluator
from runsense_cli.launcher import RunLauncher
from runsense_cli.project import find_project, load_project
from runsense_cli.runs import EventType, RunStatus
from runsense_cli.storage import SensorScope, open_storage
from tests.processes import cli, start_daemon, stop, wait_for_log, wait_until

PROJECT = """
from runsense_cli import DefaultSensorStatus, Definitions, RunStatus, job, op, run_status_sensor

@op
def quick():
    return 1

@job
def quick_job():
    quick()

@job
def other_job():
    quick()

@run_status_sensor(run_status=RunStatus.SUCCESS, monitored_jobs=[quick_job],
                   default_status=DefaultSensorStatus.RUNNING)
def on_quick(context):
    return None

@run_status_sensor(run_status=RunStatus.FAILURE, default_status=DefaultSensorStatus.STOPPED)
def any_failure(context):
    return None

defs = Definitions(jobs=[quick_job, other_job], sensors=[on_quick, any_failure])
"""

SCOPES = [
    SensorScope("a"),
    SensorScope("a", all_locations=True),
    SensorScope("a", jobs=frozenset({("a", "j1"), ("b", "j2")})),
    SensorScope("a", locations=frozenset({"b"})),
    SensorScope("a", jobs=frozenset({("a", "j1")}), locations=frozenset({"b"})),
    SensorScope("a", jobs=frozenset()),
]
RUNS = list(itertools.product(["a", "b", "c"], ["j1", "j2"]))


def test_a_scope_covers_exactly_the_runs_its_query_reads(backend):
    """`SensorScope.covers` (what a wake-up's events are matched against) agrees with the SQL
    that reads a sensor's events, for every kind of scope and run."""
    with open_storage(url=backend) as storage:
        for location, job in RUNS:
            run = storage.create_run(job, location, status=RunStatus.STARTING)
            storage.set_run_status(
                storage.set_run_status(run, RunStatus.STARTED), RunStatus.SUCCESS
            )
        for scope in SCOPES:
            events, _ = storage.status_events_after([EventType.RUN_SUCCESS], 0, scope, 100)
            read = {(run.location, run.job_name) for _, run in events}
            assert read == {pair for pair in RUNS if scope.covers(*pair)}, scope


def test_a_woken_pass_looks_at_sensors_only_for_events_that_concern_them(project, home):
    """Given the sensors running at the last look (`on_quick`: quick_job's successes), events
    of other jobs, or of other statuses, concern none of them; its job's success does, and so
    does anything a wake-up does not name (None), or a sensor the code no longer has."""
    ref = find_project(file=str(project(PROJECT, "wakedefs")))
    with open_storage(home) as storage:
        evaluator = SensorEvaluator(storage, load_project(ref), ref.to_origin())
        daemon = Daemon(evaluator, RunLauncher(storage, home), reporter=None)  # type: ignore[arg-type]
        location = evaluator.location
        daemon._running = {"on_quick"}
        assert not daemon._may_concern(frozenset({("RUN_SUCCESS", location, "other_job")}))
        assert not daemon._may_concern(frozenset({("RUN_FAILURE", location, "quick_job")}))
        assert not daemon._may_concern(frozenset({("RUN_SUCCESS", "elsewhere", "quick_job")}))
        assert not daemon._may_concern(frozenset())
        assert daemon._may_concern(frozenset({("RUN_SUCCESS", location, "quick_job")}))
        assert daemon._may_concern(None)
        daemon._running = {"any_failure"}
        assert daemon._may_concern(frozenset({("RUN_FAILURE", location, "other_job")}))
        daemon._running = {"removed_sensor"}
        assert daemon._may_concern(frozenset({("RUN_SUCCESS", location, "other_job")}))


@pytest.mark.slow
@pytest.mark.postgres
def test_a_postgresql_daemon_reacts_at_once_amid_other_jobs_runs(
    home, project, pg_url, monkeypatch, tmp_path
):
    """Given a daemon on PostgreSQL whose timed pass is 30 s away, while other jobs' runs keep
    committing, when `runsense run quick_job` succeeds, then its reaction is stored within a
    second: a wake-up naming it is never passed over."""
    monkeypatch.setenv("RUNSENSE_DATABASE_URL", pg_url)
    proj = project(PROJECT, "wakedefs")
    log = tmp_path / "daemon.log"
    process = start_daemon(home, proj, log, "--interval", "30")
    try:
        wait_for_log(log, "daemon started")
        with open_storage(url=pg_url) as storage:
            for _ in range(3):
                for _ in range(3):
                    assert cli(home, proj, "run", "other_job").returncode == 0
                done = cli(home, proj, "run", "quick_job")
                assert done.returncode == 0, done.stderr
                [run] = storage.list_runs(limit=1)
                assert run.job_name == "quick_job"
                ended = storage.status_event_for_run(run.run_id, EventType.RUN_SUCCESS).timestamp
                reaction = wait_until(
                    lambda r=run.run_id: [
                        x for x in storage.reactions_to_run(r) if x.sensor == "on_quick"
                    ],
                    5,
                )
                assert reaction[0].created_at - ended < 1.0
    finally:
        stop(process)


def test_a_commit_naming_more_than_a_wake_up_can_carry_still_commits(backend):
    """A wake-up's text is capped (PostgreSQL refuses a payload of 8,000 bytes): a transaction
    whose events name more than that, here 45 jobs with 200-character names, commits, and its
    wake-up says "anything" (None) instead of naming them."""
    names = [f"job_{i:02d}_" + "x" * 192 for i in range(45)]
    with open_storage(url=backend) as storage, open_storage(url=backend) as listener:
        listener.wait_for_change(0.05)
        listener.take_changes()
        storage.atomic(
            lambda: [storage.create_run(name, "loc", status=RunStatus.QUEUED) for name in names]
        )
        assert {run.job_name for run in storage.list_runs(limit=None)} == set(names)
        assert listener.wait_for_change(5) is True
        assert listener.take_changes() is None
