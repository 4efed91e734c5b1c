"""The storage contract (SPEC §10), one suite for both backends: every test runs as `[sqlite]` and
`[postgres]`. Where a guarantee is about concurrency, two connections (threads, each with its own)
race for real."""

from __future__ import annotations

import threading
import time

import pytest

from runsense_cli.errors import LeaseLostError, RunsenseError, StorageError
from runsense_cli.identity import ProcessId
from runsense_cli.records import Reaction, ReactionState, SensorStatus, Tick, TickStatus
from runsense_cli.runs import EventType, RunStatus
from runsense_cli.storage import NewRun, PageResult, SensorScope, WriteBack, open_storage
from runsense_cli.storage.copy import copy_database

ME = str(ProcessId.of())


@pytest.fixture
def db(backend):
    storage = open_storage(url=backend)
    yield storage
    storage.close()


@pytest.fixture
def other(backend, db):
    """A second connection to the same database (another process, as far as the database knows)."""
    storage = open_storage(url=backend)
    yield storage
    storage.close()


def started_run(storage, job="job", location="loc"):
    run = storage.create_run(job, location, status=RunStatus.STARTING, worker=ME)
    return storage.set_run_status(run, RunStatus.STARTED)


def sensor(storage, name="watcher"):
    state = storage.ensure_sensor("loc", name, running=False)
    storage.set_sensor_status(state.sensor_id, SensorStatus.RUNNING)
    return storage.sensor_state("loc", name)


def page(storage, sensor_id, event_ids, run_id, **kwargs):
    tick = Tick(0, "watcher", TickStatus.SUCCESS, time.time())
    reactions = [Reaction(sensor_id, e, run_id, ReactionState.SUCCESS) for e in event_ids]
    return storage.commit_page(
        sensor_id,
        tick,
        reactions,
        kwargs.get("new_runs", []),
        [],
        kwargs.get("write_backs", []),
        kwargs.get("cursor"),
        kwargs.get("expected"),
        kwargs["token"],
        15.0,
    )


# -- runs and events -------------------------------------------------------------------------


def test_runs_round_trip_newest_first_and_by_prefix(db):
    first = db.create_run("etl", "loc", {"ops": {"a": {"config": {"n": 1}}}}, {"team": "data"})
    second = db.create_run("etl", "loc", status=RunStatus.QUEUED)
    assert [r.run_id for r in db.list_runs(job_name="etl")] == [second.run_id, first.run_id]
    stored = db.get_run(first.run_id)
    assert (stored.run_config, stored.tags) == (
        {"ops": {"a": {"config": {"n": 1}}}},
        {"team": "data"},
    )
    assert db.find_run(first.run_id[:8].upper()).run_id == first.run_id
    assert db.job_names() == ["etl"]
    with pytest.raises(RunsenseError, match="no run id starts with 'zz'"):
        db.find_run("zz")
    [enqueued] = db.events_for_run(second.run_id)
    assert enqueued.event_type == EventType.RUN_ENQUEUED
    assert db.newest_event_id() == enqueued.event_id


def test_status_moves_forward_only_and_writes_one_event_each(db):
    run = started_run(db)
    done = db.set_run_status(run, RunStatus.SUCCESS)
    assert done is not None and done.end_time is not None
    assert db.set_run_status(done, RunStatus.FAILURE) is None  # a success is never also a failure
    assert db.set_run_status(done, RunStatus.STARTED) is None
    types = [e.event_type for e in db.events_for_run(run.run_id)]
    assert types == [EventType.RUN_STARTING, EventType.RUN_START, EventType.RUN_SUCCESS]


def test_two_connections_failing_one_dead_run_write_one_failure(db, other):
    """Guarantee 2: two processes that notice the same dead worker write one RUN_FAILURE."""
    run = started_run(db)
    results: list[object] = []
    barrier = threading.Barrier(2)

    def fail(storage):
        barrier.wait()
        results.append(storage.set_run_status(run, RunStatus.FAILURE, "worker gone"))

    threads = [threading.Thread(target=fail, args=(s,)) for s in (db, other)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(r is not None for r in results) == 1
    failures = [e for e in db.events_for_run(run.run_id) if e.event_type == EventType.RUN_FAILURE]
    assert len(failures) == 1


def test_atomic_commits_every_write_inside_or_none_and_wakes_waiters(db, other):
    """`atomic`: a run created and started with its first step in one commit; a failure inside
    stores nothing; a status change inside wakes another process's waiter."""
    while other.wait_for_change(0.05):  # the first call sets up the listener; drain old news
        pass

    def start():
        run = db.create_run("job", "loc", status=RunStatus.STARTING, worker=ME)
        started = db.set_run_status(run, RunStatus.STARTED)
        db.append_event(started, EventType.STEP_START, "step a", step_key="a")
        assert other.runs_with_status([RunStatus.STARTED]) == []  # nothing visible before it
        return started

    started = db.atomic(start)
    assert other.wait_for_change(5) is True
    assert [e.event_type for e in other.events_for_run(started.run_id)] == [
        EventType.RUN_STARTING,
        EventType.RUN_START,
        EventType.STEP_START,
    ]

    def half_done():
        db.append_event(started, EventType.STEP_SUCCESS, "step a done", step_key="a")
        db.set_run_status(started, RunStatus.SUCCESS)
        raise RuntimeError("runsense failed here")

    with pytest.raises(RuntimeError):
        db.atomic(half_done)
    assert other.get_run(started.run_id).status == RunStatus.STARTED
    assert len(other.events_for_run(started.run_id)) == 3


def test_event_ids_become_visible_in_id_order(db, other, backend):
    """Guarantee 1: while a write holding a lower event id is uncommitted, a higher id cannot be
    committed (so a reader that saw id N never later finds an id below N)."""
    run = started_run(db)
    reader = open_storage(url=backend)
    inserted = threading.Event()
    ids: dict[str, int] = {}
    seen: list[list[int]] = []

    def slow_writer():
        with db.transaction():
            ids["low"] = db.append_event(run, EventType.LOG, "low")
            inserted.set()
            time.sleep(0.4)

    def fast_writer():
        inserted.wait()
        ids["high"] = other.append_event(run, EventType.LOG, "high")

    threads = [threading.Thread(target=slow_writer), threading.Thread(target=fast_writer)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        seen.append([e.event_id for e in reader.events_for_run(run.run_id)])
        time.sleep(0.02)
    for t in threads:
        t.join()
    reader.close()
    assert ids["high"] > ids["low"]
    for snapshot in seen:
        assert not (ids["high"] in snapshot and ids["low"] not in snapshot)
    assert [e.message for e in db.events_for_run(run.run_id)][-2:] == ["low", "high"]


# -- claims ----------------------------------------------------------------------------------


def test_two_claimers_get_disjoint_runs_and_workers_need_the_claim(db, other):
    """Guarantee 3: every queued run is claimed by exactly one launcher."""
    queued = {db.create_run("job", "loc", status=RunStatus.QUEUED).run_id for _ in range(30)}
    claimed: dict[str, list[tuple[str, str]]] = {"a": [], "b": []}

    def claim(name, storage):
        while batch := storage.claim_queued_runs(f"{name}/1/1", 3):
            claimed[name] += [(run.run_id, token) for run, token in batch]

    threads = [threading.Thread(target=claim, args=pair) for pair in (("a", db), ("b", other))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    a, b = ({run_id for run_id, _ in claimed[k]} for k in ("a", "b"))
    assert a | b == queued and not a & b
    # Under load one claimer may take them all: follow whichever got runs.
    name = "a" if claimed["a"] else "b"
    run_id, token = claimed[name][0]
    assert db.register_worker(run_id, "wrong-token", ME) is None
    assert db.register_worker(run_id, token, ME).worker == ME
    assert other.register_worker(run_id, token, ME) is None  # a second worker is refused
    assert db.get_run(run_id).launcher == f"{name}/1/1"


def test_claiming_only_some_runs_leaves_the_others(db):
    wanted = db.create_run("job", "loc", status=RunStatus.QUEUED)
    older = db.create_run("job", "loc", status=RunStatus.QUEUED, now=1.0)
    [(run, _)] = db.claim_queued_runs(ME, 5, [wanted.run_id])
    assert run.run_id == wanted.run_id and db.get_run(older.run_id).status == RunStatus.QUEUED


def test_a_run_server_takes_the_oldest_queued_run_registered_to_it(db, other):
    """`claim_next_run`: the oldest QUEUED run, registered to the server (no second
    registration) for the launcher, with its origin and events; STARTED at once when its job is
    one the server has loaded from the same project, else STARTING."""
    mine = {"module": "m", "directory": "/d", "file": None}
    ended = db.set_run_status(started_run(db), RunStatus.SUCCESS)
    foreign = db.create_run("job", "loc", status=RunStatus.QUEUED, origin={"module": "x"}, now=1.0)
    ours = db.create_run("job", "loc", status=RunStatus.QUEUED, origin=mine, now=2.0)
    other_job = db.create_run("job2", "loc", status=RunStatus.QUEUED, origin=mine, now=3.0)

    # A project's jobs are one parameter, however many: no parameter limit is ever reached.
    jobs = ["job", *(f"other_{i}" for i in range(40_000))]

    def take():
        found = db.claim_next_run("daemon/1/1", ME, ended.run_id, origin=mine, jobs=jobs)
        return found and (found[0].run_id, found[0].status, found[0].worker, found[1])

    assert take() == (foreign.run_id, RunStatus.STARTING, ME, {"module": "x"})
    assert take() == (ours.run_id, RunStatus.STARTED, ME, mine)
    assert take() == (other_job.run_id, RunStatus.STARTING, ME, mine)
    assert take() is None  # none queued
    assert db.get_run(ours.run_id).launcher == "daemon/1/1"
    assert db.get_run(ours.run_id).start_time is not None
    assert other.register_worker(foreign.run_id, "", "other/2/2") is None
    types = [e.event_type for e in db.events_for_run(ours.run_id)]
    assert types == [EventType.RUN_ENQUEUED, EventType.RUN_STARTING, EventType.RUN_START]
    types = [e.event_type for e in db.events_for_run(foreign.run_id)]
    assert types == [EventType.RUN_ENQUEUED, EventType.RUN_STARTING]


def test_a_run_server_takes_nothing_after_a_cancel_request(db):
    """No run for a server whose run was ever asked to cancel: its signal may still come."""
    busy = started_run(db)
    queued = db.create_run("job", "loc", status=RunStatus.QUEUED)
    canceled = db.set_run_status(busy, RunStatus.CANCELING)
    ended_anyway = db.set_run_status(canceled, RunStatus.SUCCESS)
    assert ended_anyway is not None  # a run may still succeed over a cancel request
    assert db.claim_next_run("daemon/1/1", ME, ended_anyway.run_id) is None
    assert db.get_run(queued.run_id).status == RunStatus.QUEUED
    ended = db.set_run_status(started_run(db), RunStatus.SUCCESS)
    taken, _ = db.claim_next_run("daemon/1/1", ME, ended.run_id)
    assert taken.run_id == queued.run_id


def test_a_run_ending_and_a_cancel_of_it_at_once_never_deadlock(db, other):
    """A run's end holds its events back and locks its row first (`events_last`); a cancel of
    the same run from another connection meanwhile must wait for that row, not hold the write
    lock the end then needs: every writer locks rows first, then the write lock. (A deadlock
    would cost PostgreSQL's deadlock_timeout, 1 s, before one side is aborted and redone.)"""
    run = started_run(db)
    inside, canceled = threading.Event(), {}

    def cancel():
        inside.wait(5)
        canceled["run"] = other.set_run_status(run, RunStatus.CANCELING)

    def end():
        ended = db.set_run_status(run, RunStatus.SUCCESS)
        inside.set()
        time.sleep(0.3)  # the cancel is waiting now
        return ended

    thread = threading.Thread(target=cancel)
    thread.start()
    started = time.monotonic()
    ended = db.atomic(end, events_last=True)
    thread.join()
    assert time.monotonic() - started < 0.9
    assert ended.status == RunStatus.SUCCESS and canceled["run"] is None
    assert db.get_run(run.run_id).status == RunStatus.SUCCESS


def test_two_servers_taking_at_once_get_disjoint_runs(db, other):
    """Guarantee 3 for runs servers take themselves: no run is taken twice."""
    queued = {db.create_run("job", "loc", status=RunStatus.QUEUED).run_id for _ in range(30)}
    ended = db.set_run_status(started_run(db), RunStatus.SUCCESS)
    taken: dict[str, list[str]] = {"a": [], "b": []}

    def take(name, storage):
        while found := storage.claim_next_run(f"{name}/1/1", f"{name}/1/1", ended.run_id):
            taken[name].append(found[0].run_id)

    threads = [threading.Thread(target=take, args=pair) for pair in (("a", db), ("b", other))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(taken["a"] + taken["b"]) == sorted(queued)


# -- leases, pages and commands --------------------------------------------------------------


def test_a_lease_lost_between_check_and_commit_stores_nothing(db, other):
    """Guarantee 4: a page commits only while its token holds."""
    state = sensor(db)
    run = started_run(db)
    assert db.acquire_lease(state.sensor_id, "mine", 0.05, ME)
    assert not other.acquire_lease(state.sensor_id, "theirs", 15, ME)  # live and unexpired
    time.sleep(0.1)
    assert other.acquire_lease(state.sensor_id, "theirs", 15, ME)  # expired: taken over
    assert not db.renew_lease(state.sensor_id, "mine", 15)
    with pytest.raises(LeaseLostError):
        page(db, state.sensor_id, [1], run.run_id, token="mine", cursor=5, expected=state.cursor)
    assert db.reactions_for(state.sensor_id) == [] and db.list_ticks(state.sensor_id) == []
    assert db.sensor_state("loc", "watcher").cursor == state.cursor


def test_a_lease_of_a_dead_local_process_is_free_at_once_a_remote_one_only_by_expiry(db, other):
    state = sensor(db)
    dead_here = str(ProcessId.of(2**22 + 7))  # no such pid on this node
    assert db.acquire_lease(state.sensor_id, "ghost", 60, dead_here)
    assert other.acquire_lease(state.sensor_id, "mine", 15, ME)
    db.release_lease(state.sensor_id, "mine")
    elsewhere = str(ProcessId("another-node", 1, "0"))
    assert db.acquire_lease(state.sensor_id, "remote", 60, elsewhere)
    assert not other.acquire_lease(state.sensor_id, "mine", 15, ME)


def test_a_cursor_moved_by_a_user_mid_drain_stays_moved(db, other):
    """Guarantee 5: the drain keeps its reactions but never overwrites the user's cursor."""
    state = sensor(db)
    run = started_run(db)
    assert db.acquire_lease(state.sensor_id, "tick", 15, ME)
    other.set_cursor(state.sensor_id, 999)  # `sensor cursor --set 999` meanwhile
    result = page(
        db, state.sensor_id, [7], run.run_id, token="tick", cursor=10, expected=state.cursor
    )
    assert result == PageResult.CURSOR_MOVED
    assert db.sensor_state("loc", "watcher").cursor == 999
    assert [r.event_id for r in db.reactions_for(state.sensor_id)] == [7]


def test_a_sensor_stopped_mid_drain_ends_the_drain(db, other):
    state = sensor(db)
    run = started_run(db)
    assert db.acquire_lease(state.sensor_id, "tick", 15, ME)
    other.set_sensor_status(state.sensor_id, SensorStatus.STOPPED)
    result = page(
        db, state.sensor_id, [7], run.run_id, token="tick", cursor=10, expected=state.cursor
    )
    assert result == PageResult.STOPPED
    assert db.sensor_state("loc", "watcher").cursor == 10  # what was handled is consumed


def test_a_page_stores_runs_write_backs_and_cursor_together(db):
    state = sensor(db)
    run = started_run(db)
    assert db.acquire_lease(state.sensor_id, "tick", 15, ME)
    new = NewRun(
        "11111111-2222-4333-8444-555555555555", "next", "loc", {}, {}, run.run_id, run.run_id, None
    )
    back = WriteBack(run.run_id, run.job_name, run.location, "acted", run.created_at)
    started = db.status_event_for_run(run.run_id, EventType.RUN_START).event_id
    result = page(
        db,
        state.sensor_id,
        [started],
        run.run_id,
        token="tick",
        cursor=42,
        expected=state.cursor,
        new_runs=[new],
        write_backs=[back],
    )
    assert result == PageResult.COMMITTED
    assert db.get_run(new.run_id).status == RunStatus.QUEUED
    assert db.requested_runs(run.run_id)[0].run_id == new.run_id
    assert "acted" in [e.message for e in db.events_for_run(run.run_id)]
    assert db.sensor_state("loc", "watcher").cursor == 42
    assert [r.event_id for r in db.reactions_to_run(run.run_id)] == [started]
    assert db.reactions_to_run(new.run_id) == []


def test_status_events_after_reads_in_pages_within_scope(db):
    runs = [started_run(db, job=f"j{i % 2}") for i in range(5)]
    for run in runs:
        db.set_run_status(run, RunStatus.SUCCESS)
    scope = SensorScope("loc", jobs=frozenset({("loc", "j0")}))
    types = (EventType.RUN_SUCCESS,)
    page1, cursor = db.status_events_after(types, 0, scope, 2)
    page2, end = db.status_events_after(types, cursor, scope, 2)
    assert [r.job_name for _, r in page1 + page2] == ["j0", "j0", "j0"]
    assert end == db.newest_event_id()  # a short page skips the other jobs' events for good
    assert db.count_status_events_after(types, 0, scope) == 3
    assert db.has_status_events_after(types, 0, SensorScope("loc", locations=frozenset({"loc"})))
    assert not db.has_status_events_after(types, end, SensorScope("loc", all_locations=True))


def test_a_tick_row_stores_its_counts_beside_its_capped_lists(db):
    state = sensor(db)
    tick = Tick(0, "watcher", TickStatus.STARTED, time.time())
    for i in range(150):
        tick.count(ReactionState.SUCCESS, [f"run-{i}"], None, None)
    tick.count(ReactionState.SKIPPED, [], "not mine", None)
    tick.count(ReactionState.DEAD, [], None, "run x: boom")
    tick.settle()
    db.record_tick(state.sensor_id, tick)
    stored = db.last_tick(state.sensor_id)
    assert (stored.reactions, stored.runs_requested, stored.skipped, stored.failures) == (
        152,
        150,
        1,
        1,
    )
    assert stored.run_ids == [f"run-{i}" for i in range(100)]
    assert (stored.skip_reasons, stored.errors) == (["not mine"], ["run x: boom"])
    assert stored.status == TickStatus.FAILURE


def test_skip_cursor_moves_only_an_unleased_cursor_still_where_it_was(db, other):
    state = sensor(db)
    assert db.skip_cursor(state.sensor_id, state.cursor, 50)
    assert db.sensor_state("loc", "watcher").cursor == 50
    assert not db.skip_cursor(state.sensor_id, state.cursor, 60)  # moved since: keep it
    assert other.acquire_lease(state.sensor_id, "tick", 15, ME)
    assert not db.skip_cursor(state.sensor_id, 50, 70)  # a tick holds the lease
    other.release_lease(state.sensor_id, "tick")
    assert db.skip_cursor(state.sensor_id, 50, 70)
    assert db.sensor_state("loc", "watcher").cursor == 70


def test_an_idle_tick_is_recorded_only_unleased_running_and_at_the_cursor_it_read(db, other):
    """A tick that found nothing records itself without the lease, unless a tick holds it, the
    cursor moved or the sensor stopped meanwhile (then it stores nothing: the caller ticks the
    usual way)."""
    state = sensor(db)

    def idle():
        return Tick(
            0,
            "watcher",
            TickStatus.SKIPPED,
            time.time(),
            cursor_before=state.cursor,
            cursor_after=state.cursor,
        )

    recorded = idle()
    assert db.record_idle_tick(state.sensor_id, recorded, state.cursor)
    assert recorded.tick_id and other.list_ticks(state.sensor_id) == [recorded]
    assert other.acquire_lease(state.sensor_id, "tick", 15, ME)
    assert not db.record_idle_tick(state.sensor_id, idle(), state.cursor)  # a tick runs
    other.release_lease(state.sensor_id, "tick")
    assert not db.record_idle_tick(state.sensor_id, idle(), state.cursor + 1)  # cursor moved
    other.set_sensor_status(state.sensor_id, SensorStatus.STOPPED)
    refused = idle()
    assert not db.record_idle_tick(state.sensor_id, refused, state.cursor)
    assert refused.tick_id == 0 and other.list_ticks(state.sensor_id) == [recorded]


def test_runs_created_between_pages_through_a_window_in_creation_order(db):
    before = time.time()
    runs = [
        db.create_run("job", "loc", status=RunStatus.QUEUED, now=100.0 + i // 3) for i in range(7)
    ]
    db.create_run("job", "loc", status=RunStatus.QUEUED, now=200.0)  # after the window
    seen, after = [], (100.0, "")
    while page_ := db.runs_created_between(100.0, 150.0, after, 2):
        seen += page_
        after = (page_[-1].created_at, page_[-1].run_id)
    expected = sorted(runs, key=lambda r: (r.created_at, r.run_id))
    assert [r.run_id for r in seen] == [r.run_id for r in expected]
    assert db.runs_created_between(before, time.time() + 1, (before, ""), 10) == []


def test_counting_waiting_events_stops_at_the_limit(db):
    """`sensor list` asks for a count up to a cap: at most `limit`, exact below it."""
    for _ in range(5):
        db.set_run_status(started_run(db, job="j0"), RunStatus.FAILURE)
    db.set_run_status(started_run(db, job="j1"), RunStatus.FAILURE)
    types = (EventType.RUN_FAILURE,)
    scope = SensorScope("loc", jobs=frozenset({("loc", "j0")}))
    assert [db.count_status_events_after(types, 0, scope, n) for n in (1, 3, 5, 6)] == [1, 3, 5, 5]
    assert db.count_status_events_after(types, 0, SensorScope("loc", all_locations=True), 10) == 6
    assert db.count_status_events_after(types, db.newest_event_id(), scope, 10) == 0


def test_code_defaults_rule_until_a_user_pins_the_status(db):
    state = db.ensure_sensor("loc", "s", running=True)
    assert state.status == SensorStatus.RUNNING
    assert db.ensure_sensor("loc", "s", running=False).status == SensorStatus.STOPPED
    db.set_sensor_status(state.sensor_id, SensorStatus.RUNNING)  # `sensor start`: pinned
    assert db.ensure_sensor("loc", "s", running=False).status == SensorStatus.RUNNING
    db.reset_sensor_status(state.sensor_id, running=False)
    assert db.sensor_state("loc", "s").status == SensorStatus.STOPPED


# -- time, heartbeats, wake-ups ---------------------------------------------------------------


def test_heartbeats_use_the_database_clock(db):
    run = started_run(db)
    before = db.db_time()
    db.heartbeat_runs([run.run_id])
    assert db.get_run(run.run_id).heartbeat_at >= before
    db.heartbeat_daemon("node-a/42/7", {"sensors": ["x"]})
    [daemon] = db.list_daemons()
    assert (daemon.node, daemon.pid, daemon.info) == ("node-a", 42, {"sensors": ["x"]})
    db.remove_daemon("node-a/42/7")
    assert db.list_daemons() == []


def test_wait_for_change_wakes_on_another_connections_commit(db, other):
    """Guarantee 7: a status change elsewhere wakes a waiter at once; nothing: the timeout."""
    assert db.wait_for_change(0.05) is False or True  # the first call may set up its listener
    while db.wait_for_change(0.05):
        pass
    woke = {}

    def wait():
        started = time.monotonic()
        woke["changed"] = db.wait_for_change(5)
        woke["after"] = time.monotonic() - started

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.2)
    other.create_run("job", "loc", status=RunStatus.QUEUED)
    waiter.join()
    assert woke["changed"] is True and woke["after"] < 1.0


def test_wake_ups_name_the_events_they_bring(db, other, backend):
    """`take_changes`: what the wake-ups said was committed since the last call, so a daemon
    can tell that none of it concerns its sensors: each event's (type, location, job) on
    PostgreSQL; a command names nothing (None: anything may have changed), and SQLite's wake-ups
    never say (None)."""
    postgres = backend.startswith("postgres")
    db.wait_for_change(0.05)  # listening from here on
    while db.wait_for_change(0.05):
        pass
    db.take_changes()
    run = other.create_run("job_a", "loc_a", status=RunStatus.STARTING, worker=ME)
    other.set_run_status(run, RunStatus.STARTED)
    assert db.wait_for_change(5) is True
    while db.wait_for_change(0.2):
        pass
    expected = {("RUN_STARTING", "loc_a", "job_a"), ("RUN_START", "loc_a", "job_a")}
    assert db.take_changes() == (expected if postgres else None)
    assert db.take_changes() == (frozenset() if postgres else None)  # taken: nothing since
    sensor(other)  # a command
    assert db.wait_for_change(5) is True
    assert db.take_changes() is None


# -- schema and moving a database ------------------------------------------------------------


def test_reopening_keeps_data_and_a_newer_schema_is_refused(db, backend):
    run = db.create_run("job", "loc")
    with open_storage(url=backend) as again:
        assert again.get_run(run.run_id).job_name == "job"
    if backend.startswith("sqlite"):
        db.conn.execute("PRAGMA user_version = 99")
    else:
        db.conn.execute("UPDATE runsense_schema SET version = 99")
    with pytest.raises(StorageError, match="newer than this runsense understands"):
        open_storage(url=backend)


def test_history_written_before_schema_7_is_found_from_its_runs_after_the_upgrade(
    backend, monkeypatch
):
    """Schema 7 re-keys the by-run indexes on creation times: a run's events, the reactions to
    it and the runs requested from it, written by an older runsense, are still found."""
    from runsense_cli.storage import postgres, schema, sql, sqlite

    for module in (postgres, sql, sqlite):
        monkeypatch.setattr(module, "SCHEMA_VERSION", 6)
    monkeypatch.setattr(sql, "MIGRATIONS", schema.MIGRATIONS[:6])
    old = open_storage(url=backend)
    rows = [
        "INSERT INTO runs (run_id, job_name, location, status, run_config, tags, created_at)"
        " VALUES ('parent', 'job', 'loc', 'SUCCESS', '{}', '{}', 100.0)",
        "INSERT INTO runs (run_id, job_name, location, status, run_config, tags, created_at,"
        " parent_run_id, root_run_id) VALUES ('child', 'job', 'loc', 'QUEUED', '{}', '{}',"
        " 200.0, 'parent', 'parent')",
        "INSERT INTO events (run_id, event_type, timestamp, job_name, location)"
        " VALUES ('parent', 'RUN_SUCCESS', 150.0, 'job', 'loc')",
        "INSERT INTO events (run_id, event_type, timestamp, job_name, location)"
        " VALUES ('child', 'RUN_ENQUEUED', 200.0, 'job', 'loc')",
        "INSERT INTO sensors (location, name, status) VALUES ('loc', 'watcher', 'RUNNING')",
        "INSERT INTO reactions (sensor_id, event_id, run_id, state, attempts, created_at)"
        " SELECT s.id, e.id, 'parent', 'SUCCESS', 1, 160.0 FROM sensors s, events e"
        " WHERE e.run_id = 'parent'",
    ]
    old._write(lambda: [old._execute(row) for row in rows])
    old.close()
    monkeypatch.undo()

    with open_storage(url=backend) as db:
        [success] = db.events_for_run("parent")
        assert success.event_type == EventType.RUN_SUCCESS
        assert [r.event_id for r in db.reactions_to_run("parent")] == [success.event_id]
        assert [r.run_id for r in db.requested_runs("parent")] == ["child"]
        assert [e.event_type for e in db.events_for_run("child")] == [EventType.RUN_ENQUEUED]
        assert db.reactions_to_run("child") == [] and db.requested_runs("child") == []
        # A runsense from before schema 7, still running, writes rows without the new columns.
        late = [
            "INSERT INTO runs (run_id, job_name, location, status, run_config, tags, created_at,"
            " parent_run_id, root_run_id) VALUES ('late', 'job', 'loc', 'QUEUED', '{}', '{}',"
            " 300.0, 'parent', 'parent')",
            "INSERT INTO events (run_id, event_type, timestamp, job_name, location)"
            " VALUES ('parent', 'SENSOR_REACTION', 310.0, 'job', 'loc')",
        ]
        db._write(lambda: [db._execute(row) for row in late])
        assert [e.timestamp for e in db.events_for_run("parent")] == [150.0, 310.0]
        assert [r.run_id for r in db.requested_runs("parent")] == ["child", "late"]


def test_db_copy_moves_history_and_cursors_and_refuses_a_full_target(db, tmp_path, backend):
    state = sensor(db)
    run = started_run(db)
    db.set_run_status(run, RunStatus.SUCCESS)
    db.set_cursor(state.sensor_id, db.newest_event_id())
    target_url = f"sqlite:///{tmp_path / 'copy.db'}"
    counts = copy_database(db, open_storage(url=target_url))
    assert counts["runs"] == 1 and counts["events"] == 3 and counts["sensors"] == 1
    with open_storage(url=target_url) as copy:
        assert copy.get_run(run.run_id).status == RunStatus.SUCCESS
        assert copy.sensor_state("loc", "watcher").cursor == db.newest_event_id()
        later = copy.create_run("job", "loc", status=RunStatus.QUEUED)
        assert copy.events_for_run(later.run_id)[0].event_id > db.newest_event_id()
        with pytest.raises(StorageError, match="not empty"):
            copy_database(db, copy)


def test_db_copy_from_the_cli_moves_a_sqlite_home_to_postgresql(home, pg_url, project):
    """The migration path of the README: history and cursors survive the move, and the password
    in the URL is never printed."""
    import subprocess
    import sys

    path = project(
        "from runsense_cli import Definitions, job, op\n"
        "@op\ndef hello():\n    return 1\n"
        "@job\ndef hello_job():\n    hello()\n"
        "defs = Definitions(jobs=[hello_job])\n"
    )
    command = [sys.executable, "-m", "runsense_cli", "-f", str(path), "--home", str(home)]
    assert subprocess.run([*command, "run", "hello_job"], capture_output=True).returncode == 0
    secret_url = pg_url.replace("@", ":s3cret-pw@", 1) if "@" in pg_url else pg_url
    copied = subprocess.run([*command, "db", "copy", secret_url], capture_output=True, text=True)
    assert copied.returncode == 0, copied.stderr
    assert "Copied 1 runs" in copied.stdout and "s3cret-pw" not in copied.stdout + copied.stderr
    listed = subprocess.run(
        [*command, "--database-url", pg_url, "runs", "list", "--json"], capture_output=True
    )
    import json

    [run] = json.loads(listed.stdout)
    assert (run["job_name"], run["status"]) == ("hello_job", "SUCCESS")
    again = subprocess.run([*command, "db", "copy", pg_url], capture_output=True, text=True)
    assert again.returncode == 2 and "is not empty" in again.stderr


def test_a_command_waits_out_a_database_outage_saying_so_once(pg_url, pg_server, project, home):
    """SPEC §10: a command that cannot reach the database retries with back-off, says so in one
    line, and carries on when the server is back; the URL's password never shows."""
    import subprocess
    import sys

    with open_storage(url=pg_url) as storage:
        storage.create_run("job", "loc")
    secret_url = pg_url.replace("@", ":s3cret-pw@", 1)
    pg_server.stop()
    try:
        command = subprocess.Popen(
            [sys.executable, "-m", "runsense_cli", "--database-url", secret_url, "runs", "list"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(2.0)
    finally:
        pg_server.start()
    out, err = command.communicate(timeout=60)
    assert command.returncode == 0, err
    assert err.count("database unreachable, retrying") == 1 and "s3cret-pw" not in out + err
    assert "job" in out


def test_urls_that_cannot_work_are_one_line_at_once_with_the_password_masked(pg_url, home):
    """Review findings: a malformed URL printed a traceback holding the password; a missing
    database was retried for 30 s as if the server were down."""
    import subprocess
    import sys

    missing = pg_url.rsplit("/", 1)[0] + "/no_such_db"
    cases = [
        ("postgresql://bob:S3cretPW@[::1/db", "cannot read the database URL"),
        ("postgresql://bob:S3cret%zzPW@localhost/db", "cannot read the database URL"),
        (missing.replace("@", ":S3cretPW@", 1), "does not exist"),
    ]
    for url, expected in cases:
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "runsense_cli", "--database-url", url, "runs", "list"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 2 and expected in result.stderr, result.stderr
        assert "S3cret" not in result.stderr and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert time.monotonic() - started < 10


def test_something_else_at_the_wake_path_only_costs_the_wake_ups(home):
    home.mkdir(parents=True, exist_ok=True)
    (home / "wake").write_text("not a directory")
    with open_storage(home) as storage:
        assert storage.wait_for_change(0.05) is False
        storage.create_run("job", "loc", status=RunStatus.QUEUED)  # commits still work


def test_db_copy_refuses_a_source_with_nothing_in_it(home, tmp_path):
    import subprocess
    import sys

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "runsense_cli",
            "--home",
            str(tmp_path / "typo-home"),
            "db",
            "copy",
            f"sqlite:///{tmp_path / 'target.db'}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "nothing to copy" in result.stderr
    assert not (tmp_path / "target.db").exists()
