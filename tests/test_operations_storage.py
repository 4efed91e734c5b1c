"""The storage contract for operating runs (SPEC §12): delete and prune, on both backends."""

from __future__ import annotations

import time

import pytest

from runsense_cli.identity import ProcessId
from runsense_cli.records import Reaction, ReactionState, SensorStatus, Tick, TickStatus
from runsense_cli.runs import RunStatus
from runsense_cli.storage import open_storage

ME = str(ProcessId.of())
DAY = 86400.0


@pytest.fixture
def db(backend):
    storage = open_storage(url=backend)
    yield storage
    storage.close()


def finished_run(storage, status=RunStatus.SUCCESS, when=None, job="job"):
    run = storage.create_run(job, "loc", status=RunStatus.STARTING, worker=ME, now=when)
    run = storage.set_run_status(run, RunStatus.STARTED, now=when)
    return storage.set_run_status(run, status, now=when)


def test_delete_runs_removes_finished_runs_and_their_events_never_one_in_progress(db):
    done = finished_run(db)
    running = db.create_run("job", "loc", status=RunStatus.STARTING, worker=ME)
    queued = db.create_run("job", "loc", status=RunStatus.QUEUED)
    deleted = db.delete_runs([done.run_id, running.run_id, queued.run_id])
    assert deleted == [done.run_id]
    assert db.events_for_run(done.run_id) == []
    assert {r.run_id for r in db.list_runs()} == {running.run_id, queued.run_id}
    assert db.events_for_run(running.run_id)  # untouched
    assert db.delete_runs([]) == []


def test_prune_deletes_old_finished_history_only(db):
    old = time.time() - 40 * DAY
    old_run = finished_run(db, RunStatus.FAILURE, when=old)
    new_run = finished_run(db)
    stuck = db.create_run("job", "loc", status=RunStatus.STARTING, worker=ME, now=old)
    state = db.ensure_sensor("loc", "watcher", running=False)  # stopped: guards nothing
    for started in (old, old + 1, time.time()):
        db.record_tick(state.sensor_id, Tick(0, "watcher", TickStatus.SKIPPED, started))
    cutoff = time.time() - 30 * DAY

    preview = db.prune(cutoff, dry_run=True)
    assert preview.run_ids == [old_run.run_id]
    assert preview.events == 3 and preview.ticks == 2
    assert db.get_run(old_run.run_id)  # a dry run deletes nothing
    assert len(db.list_ticks(state.sensor_id)) == 3

    result = db.prune(cutoff)
    assert result == preview
    assert {r.run_id for r in db.list_runs()} == {new_run.run_id, stuck.run_id}
    assert db.events_for_run(old_run.run_id) == []
    assert len(db.list_ticks(state.sensor_id)) == 1


def test_prune_keeps_runs_a_running_sensor_has_not_consumed_or_still_retries(db):
    old = time.time() - 40 * DAY
    state = db.ensure_sensor("loc", "watcher", running=False)
    db.set_sensor_status(state.sensor_id, SensorStatus.RUNNING)  # cursor = newest event (0)
    unread = finished_run(db, when=old)
    cutoff = time.time() - 30 * DAY
    assert db.prune(cutoff).run_ids == []  # its events are above the running sensor's cursor
    db.set_cursor(state.sensor_id, db.newest_event_id())
    retried = finished_run(db, RunStatus.FAILURE, when=old)
    failure_event = db.events_for_run(retried.run_id)[-1].event_id
    db.set_cursor(state.sensor_id, db.newest_event_id())
    tick = Tick(0, "watcher", TickStatus.FAILURE, time.time())
    reaction = Reaction(
        state.sensor_id, failure_event, retried.run_id, ReactionState.RETRYING, attempts=1
    )
    token = "t"
    assert db.acquire_lease(state.sensor_id, token, 15.0, ME)
    db.commit_page(state.sensor_id, tick, [reaction], [], [], [], None, None, token, 15.0)
    db.release_lease(state.sensor_id, token)
    assert db.prune(cutoff).run_ids == [unread.run_id]  # the retrying one stays
    assert db.get_run(retried.run_id)


def test_prune_deletes_old_finished_reactions(db):
    old = time.time() - 40 * DAY
    run = finished_run(db, when=old)
    state = db.ensure_sensor("loc", "watcher", running=False)
    event = db.events_for_run(run.run_id)[-1].event_id
    reaction = Reaction(state.sensor_id, event, run.run_id, ReactionState.SKIPPED, created_at=old)
    assert db.acquire_lease(state.sensor_id, "t", 15.0, ME)
    tick = Tick(0, "watcher", TickStatus.SKIPPED, old)
    db.commit_page(state.sensor_id, tick, [reaction], [], [], [], None, None, "t", 15.0)
    result = db.prune(time.time() - 30 * DAY)
    assert result.run_ids == [run.run_id] and result.reactions == 1
    assert db.reactions_to_run(run.run_id) == []
