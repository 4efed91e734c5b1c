"""Issue 11 storage, on both backends: retries and incidents written with the status event,
overdue marks written once, and each sensor's durable values."""

from __future__ import annotations

import pytest

from runsense_cli.records import SensorStatus, Tick, TickStatus
from runsense_cli.runs import EventType, RunStatus
from runsense_cli.storage import open_storage


@pytest.fixture
def storage(backend):
    with open_storage(url=backend) as opened:
        yield opened


def fail(storage, run, now=None):
    moved = storage.set_run_status(run, RunStatus.STARTED, now=now)
    return storage.set_run_status(moved, RunStatus.FAILURE, "it broke", now=now)


def succeed(storage, run, now=None):
    moved = storage.set_run_status(run, RunStatus.STARTED, now=now)
    return storage.set_run_status(moved, RunStatus.SUCCESS, now=now)


def new_run(storage, tags=None, job="etl"):
    return storage.create_run(job, "loc", {"ops": {}}, tags or {}, status=RunStatus.QUEUED)


def test_a_failure_with_retries_left_queues_one_retry_in_the_same_commit(storage):
    first = new_run(storage, {"runsense/max_retries": "2", "team": "data"})
    failed = fail(storage, first)
    assert failed.will_retry and failed.tags["runsense/will_retry"] == "true"
    [retry] = storage.requested_runs(first.run_id)
    assert retry.status == RunStatus.QUEUED
    assert (retry.job_name, retry.run_config) == ("etl", {"ops": {}})
    assert retry.tags["runsense/retry_of"] == first.run_id
    assert retry.tags["runsense/retry_number"] == "1"
    assert retry.tags["team"] == "data" and "runsense/will_retry" not in retry.tags
    assert (retry.parent_run_id, retry.root_run_id) == (first.run_id, first.run_id)
    assert [e.event_type for e in storage.events_for_run(retry.run_id)] == [EventType.RUN_ENQUEUED]
    # A second FAILURE of the same run is refused by the compare-and-set: no second retry.
    assert storage.set_run_status(failed, RunStatus.FAILURE) is None
    assert len(storage.requested_runs(first.run_id)) == 1
    second = fail(storage, retry)
    assert second.will_retry
    [third] = storage.requested_runs(retry.run_id)
    assert third.tags["runsense/retry_number"] == "2"
    assert third.root_run_id == first.run_id
    last = fail(storage, third)
    assert not last.will_retry and storage.requested_runs(third.run_id) == []


def test_dagster_max_retries_is_read_the_same_way(storage):
    failed = fail(storage, new_run(storage, {"dagster/max_retries": "1"}))
    assert failed.will_retry
    assert not fail(storage, new_run(storage)).will_retry


def test_incidents_open_count_and_resolve_and_each_event_keeps_its_snapshot(storage):
    runs = [new_run(storage) for _ in range(3)]
    fail(storage, runs[0], now=100.0)
    fail(storage, runs[1], now=200.0)
    [incident] = storage.list_incidents(open_only=True)
    assert (incident.status, incident.failure_count) == ("OPEN", 2)
    assert (incident.first_run_id, incident.last_run_id) == (runs[0].run_id, runs[1].run_id)
    assert storage.open_incident_run_ids() == {runs[0].run_id, runs[1].run_id}
    succeed(storage, runs[2], now=400.0)
    assert storage.list_incidents(open_only=True) == []
    [resolved] = storage.list_incidents()
    assert (resolved.status, resolved.resolved_at, resolved.failure_count) == ("RESOLVED", 400.0, 2)
    first_event = storage.status_event_for_run(runs[0].run_id, EventType.RUN_FAILURE)
    snap = storage.incident_at_event(first_event.event_id)
    assert (snap.failure_count, snap.opened_by_this_run, snap.status) == (1, True, "OPEN")
    second = storage.incident_at_event(
        storage.status_event_for_run(runs[1].run_id, EventType.RUN_FAILURE).event_id
    )
    assert (second.failure_count, second.opened_by_this_run) == (2, False)
    fixed = storage.incident_at_event(
        storage.status_event_for_run(runs[2].run_id, EventType.RUN_SUCCESS).event_id
    )
    assert fixed.resolved_by_this_run and fixed.status == "RESOLVED"
    assert storage.incident_of_run(runs[0].run_id).status == "RESOLVED"
    assert storage.open_incident_run_ids() == set()


def test_retrying_failures_and_cancels_neither_open_nor_resolve(storage):
    fail(storage, new_run(storage, {"runsense/max_retries": "1"}))
    assert storage.list_incidents() == []
    fail(storage, new_run(storage))
    canceled = new_run(storage)
    storage.set_run_status(canceled, RunStatus.CANCELED)
    assert storage.list_incidents(open_only=True)[0].failure_count == 1
    # Another job's success does not resolve it.
    succeed(storage, new_run(storage, job="other"))
    assert len(storage.list_incidents(open_only=True)) == 1
    assert (
        storage.incident_at_event(
            storage.status_event_for_run(canceled.run_id, EventType.RUN_CANCELED).event_id
        ).failure_count
        == 1
    )


def test_an_overdue_mark_is_written_once_and_only_while_in_that_phase(storage):
    run = new_run(storage)
    started = storage.set_run_status(run, RunStatus.STARTED, now=1000.0)
    event_id = storage.record_overdue(run.run_id, "STARTED", 5.0, now=1012.0)
    assert event_id is not None
    assert storage.record_overdue(run.run_id, "STARTED", 5.0, now=1013.0) is None
    assert storage.record_overdue(run.run_id, "QUEUED", 5.0, now=1013.0) is None
    overdue = storage.overdue_at_event(event_id)
    assert (overdue.phase, overdue.overdue_seconds, overdue.limit_seconds) == ("STARTED", 12.0, 5.0)
    assert storage.get_event(event_id).event_type == EventType.RUN_OVERDUE
    assert storage.overdue_phases([run.run_id, "x"]) == {(run.run_id, "STARTED")}
    storage.set_run_status(started, RunStatus.SUCCESS)
    assert storage.get_run(run.run_id).status == RunStatus.SUCCESS


def test_sensor_values_commit_with_the_page_and_none_deletes(storage):
    state = storage.ensure_sensor("loc", "s", True)
    storage.set_sensor_values(state.sensor_id, {"a": {"ts": "1.2"}, "b": 1})
    assert storage.sensor_values(state.sensor_id) == {"a": {"ts": "1.2"}, "b": 1}
    token = "t" * 32
    assert storage.acquire_lease(state.sensor_id, token, 30.0, "me/1/1")
    tick = Tick(0, "s", TickStatus.SKIPPED, 0.0, cursor_before=0, cursor_after=0)
    storage.commit_page(
        state.sensor_id, tick, [], [], [], [], None, None, token, 30.0, {"a": None, "c": [1, 2]}
    )
    assert storage.sensor_values(state.sensor_id) == {"b": 1, "c": [1, 2]}
    storage.set_sensor_status(state.sensor_id, SensorStatus.STOPPED)


def test_prune_keeps_the_runs_of_an_open_incident(backend):
    """SPEC §12: prune never deletes an open incident's runs; a resolved one's may go."""
    from runsense_cli.runs import RunStatus
    from runsense_cli.storage import open_storage

    with open_storage(url=backend) as storage:

        def ended(job: str, status: RunStatus):
            run = storage.create_run(
                job, "loc", status=RunStatus.STARTING, worker="x/1/1/y", now=1.0
            )
            run = storage.set_run_status(run, RunStatus.STARTED, now=1.0)
            return storage.set_run_status(run, status, now=2.0)

        failing = ended("broken_job", RunStatus.FAILURE)  # opens an incident, still open
        fixed = ended("flaky_job", RunStatus.FAILURE)
        ended("flaky_job", RunStatus.SUCCESS)  # resolves flaky_job's incident
        pruned = set(storage.prune(before=10.0).run_ids)
        assert failing.run_id not in pruned and fixed.run_id in pruned
        assert storage.get_run(failing.run_id).status == RunStatus.FAILURE
