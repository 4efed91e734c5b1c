"""One tick stays bounded whatever the backlog (SPEC §8 round 2): its stored row and what it hands
back keep counts and the first few ids and notes, and the daemon's per-pass check reads only
events it has not looked at before."""

from __future__ import annotations

import json
import time

import pytest

from runsense_cli import (
    DagsterRunStatus,
    Definitions,
    RunRequest,
    SkipReason,
    job,
    op,
    run_status_sensor,
)
from runsense_cli.evaluation import SensorEvaluator
from runsense_cli.identity import ProcessId
from runsense_cli.outcomes import MAX_PARKED, RECENT_REACTIONS
from runsense_cli.records import (
    MAX_NOTE_CHARS,
    MAX_TICK_NOTES,
    MAX_TICK_RUN_IDS,
    SensorStatus,
    TickStatus,
)
from runsense_cli.runs import RunStatus
from runsense_cli.storage import open_storage
from runsense_cli.storage.sqlite import SqliteStorage

ROW_CAP = 64 * 1024  # SPEC §8 round 2: a stored tick row ≤ 64 KB


@op
def work():
    return 1


@job
def watched():
    work()


@job
def noise():
    work()


@job
def followup():
    work()


@run_status_sensor(
    run_status=DagsterRunStatus.SUCCESS, monitored_jobs=[watched], request_job=followup
)
def requester(context):
    return RunRequest()


@run_status_sensor(run_status=DagsterRunStatus.SUCCESS, monitored_jobs=[watched], max_retries=0)
def noisy(context):
    """Half fail, half skip, each with its own long text: neither may grow the tick's row."""
    run_id = context.dagster_run.run_id
    if run_id[0] in "01234567":
        raise ValueError(f"cannot handle {run_id} " + "x" * 2000)
    return SkipReason(f"not for {run_id} " + "y" * 2000)


@pytest.fixture
def storage(home, backend, monkeypatch):
    monkeypatch.setenv("RUNSENSE_DATABASE_URL", backend)
    with open_storage(url=backend) as storage:
        yield storage


def backlog(backend: str) -> int:
    return 5_000 if backend.startswith("sqlite") else 1_000


def finished(storage, job_def, count: int) -> None:
    """`count` successful runs of `job_def`, written as a worker would (status events only)."""
    me = str(ProcessId.of())
    for _ in range(count):
        run = storage.create_run(
            job_def.name, job_def.location, status=RunStatus.STARTING, worker=me
        )
        storage.set_run_status(run, RunStatus.SUCCESS)


def started(storage, *sensors) -> SensorEvaluator:
    defs = Definitions(jobs=[watched, noise, followup], sensors=list(sensors))
    evaluator = SensorEvaluator(storage, defs)
    evaluator.register_sensors()
    for sensor in sensors:
        state = evaluator.state(sensor)
        storage.set_sensor_status(state.sensor_id, SensorStatus.RUNNING)
    return evaluator


def row_bytes(tick) -> int:
    """What the tick row holds beside its numbers, as the benchmark measures it."""
    return sum(
        len(json.dumps(x)) for x in (tick.run_ids, tick.skip_reasons, tick.errors, tick.logs)
    )


def test_a_tick_requesting_thousands_of_runs_keeps_a_small_row_and_counts_them_all(
    storage, backend
):
    """Given thousands of waiting runs, when a sensor requests a run for each in one tick, then
    every run exists, the tick counts them all, and its row and result stay small."""
    count = backlog(backend)
    evaluator = started(storage, requester)
    finished(storage, watched, count)

    result = evaluator.tick(requester)

    tick = result.tick
    assert (tick.status, tick.reactions, tick.runs_requested) == (TickStatus.SUCCESS, count, count)
    requested = storage.list_runs(job_name="followup", limit=None)
    assert len(requested) == count
    stored = storage.last_tick(evaluator.state(requester).sensor_id)
    assert (stored.reactions, stored.runs_requested) == (count, count)
    assert len(stored.run_ids) == MAX_TICK_RUN_IDS
    assert set(stored.run_ids) <= {r.run_id for r in requested}
    assert row_bytes(stored) < ROW_CAP
    assert len(result.reactions) == RECENT_REACTIONS  # the last few, for the daemon's view


def test_failures_and_skips_are_counted_and_only_the_first_few_kept(storage, backend):
    """Given thousands of runs that a sensor fails on or skips, each with its own long message,
    when it ticks, then the tick counts every failure and skip, keeps the first 20 errors and
    20 distinct reasons (each cut to 500 characters), and its row stays under the cap."""
    count = backlog(backend)
    evaluator = started(storage, noisy)
    finished(storage, watched, count)

    result = evaluator.tick(noisy)

    tick = storage.last_tick(evaluator.state(noisy).sensor_id)
    assert tick.status == TickStatus.FAILURE
    assert tick.reactions == tick.failures + tick.skipped == count
    assert tick.failures > MAX_TICK_NOTES and tick.skipped > MAX_TICK_NOTES
    assert len(tick.errors) == len(tick.skip_reasons) == MAX_TICK_NOTES
    assert all(len(n) <= MAX_NOTE_CHARS for n in tick.errors + tick.skip_reasons)
    assert tick.errors[0].startswith("run ") and "ValueError: cannot handle" in tick.errors[0]
    assert row_bytes(tick) < ROW_CAP
    assert result.parked_count == tick.failures and len(result.parked) == MAX_PARKED
    assert len(storage.failed_reactions([evaluator.state(noisy).sensor_id])) == tick.failures


def vm_steps(storage: SqliteStorage, check) -> tuple[object, int]:
    """Run `check` and count the SQLite virtual machine's steps meanwhile: rows read, roughly."""
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0

    storage.conn.set_progress_handler(count, 1)
    try:
        return check(), steps
    finally:
        storage.conn.set_progress_handler(None, 1)


def test_the_per_pass_check_never_reads_an_event_twice_whatever_the_scope(home):
    """Given a sensor watching one job and thousands of other jobs' events behind its cursor,
    when the daemon checks it pass after pass, then only the first pass reads those events; the
    next ones read a constant handful of rows, new noise costs only itself, and a matching event
    is still found at once."""
    storage = SqliteStorage.open_home(home)
    evaluator = started(storage, requester)
    finished(storage, noise, 3_000)
    state = evaluator.state(requester)
    check = lambda: evaluator.has_work(requester, state, time.time())  # noqa: E731

    first, first_steps = vm_steps(storage, check)
    again, again_steps = vm_steps(storage, check)
    finished(storage, noise, 1)
    after_noise, noise_steps = vm_steps(storage, check)

    assert (first, again, after_noise) == (False, False, False)
    assert first_steps > 30_000  # it had to look at 3,000 events once
    assert again_steps < 200 and noise_steps < 400
    finished(storage, watched, 1)
    assert evaluator.has_work(requester, state, time.time())
    storage.close()


def test_a_long_run_of_unmatched_events_moves_the_stored_cursor(home):
    """Given a sensor's check that found thousands of events past its cursor, none its own, then
    the stored cursor skips them, so a restarted daemon does not read them again either."""
    storage = SqliteStorage.open_home(home)
    evaluator = started(storage, requester)
    evaluator.skip_after = 1_000
    finished(storage, noise, 2_000)

    assert not evaluator.has_work(requester, evaluator.state(requester), time.time())

    assert evaluator.state(requester).cursor == storage.newest_event_id()
    restarted = SensorEvaluator(storage, evaluator.definitions)
    check = lambda: restarted.has_work(requester, restarted.state(requester), time.time())  # noqa: E731
    found, steps = vm_steps(storage, check)
    assert not found and steps < 200
    storage.close()
