"""A daemon's run servers take their next queued run themselves, in the commit that ends the run
before (SPEC §10 claims, issue 9's throughput): through real daemons and run servers, on both
backends. Runs keep flowing while their daemon is busy; a stopping daemon's servers take none."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from runsense_cli.runs import RunStatus
from runsense_cli.storage import open_storage
from tests.processes import (
    cli,
    kill_workers_in_progress,
    pid_running,
    start_daemon,
    stop,
    wait_for_log,
    wait_until,
)

pytestmark = pytest.mark.slow

PROJECT = """
import os, time
from runsense_cli import Definitions, job, op

@op
def quick():
    print(f"pid={os.getpid()}")

@job
def quick_job():
    quick()

@op
def slow():
    time.sleep(1.5)

@job
def slow_job():
    slow()

defs = Definitions(jobs=[quick_job, slow_job])
"""


@pytest.fixture
def proj(project, home: Path):
    yield project(PROJECT, "takedefs")
    kill_workers_in_progress(home)


@pytest.fixture
def url(backend: str, home: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The database every process of the test uses (the `backend` fixture's URL)."""
    monkeypatch.setenv("RUNSENSE_DATABASE_URL", backend)
    return backend


@pytest.fixture
def daemon(home: Path, proj: Path, tmp_path: Path):
    """Start a daemon with one slot (and `args`); its log; stopped after the test."""
    started = []

    def start(*args: str) -> tuple[object, Path]:
        log = tmp_path / f"daemon{len(started)}.log"
        process = start_daemon(home, proj, log, "--max-concurrent-runs", "1", *args)
        started.append(process)
        wait_for_log(log, "daemon started")
        return process, log

    yield start
    for process in started:
        stop(process)


def slow_run_and_queue(home: Path, proj: Path, url: str, count: int) -> tuple[str, list[str]]:
    """A slow run started by the daemon's one slot, then `count` quick runs queued behind it."""
    first = queue(home, proj, "slow_job")
    wait_until(lambda: runs_of(url, [first])[0].status == RunStatus.STARTED, 20)
    return first, [queue(home, proj, "quick_job") for _ in range(count)]


def queue(home: Path, proj: Path, job: str) -> str:
    done = cli(home, proj, "run", job, "--queue")
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def runs_of(url: str, run_ids: list[str]) -> list:
    with open_storage(url=url) as storage:
        return [storage.get_run(run_id) for run_id in run_ids]


def all_finished(url: str, run_ids: list[str]) -> list:
    """The runs once every one has finished (for `wait_until`), else an empty list."""
    runs = runs_of(url, run_ids)
    return runs if all(run.is_finished for run in runs) else []


def test_servers_keep_taking_queued_runs_while_their_daemon_is_paused(home, proj, url, daemon):
    """Given a daemon with one slot running a slow run and four more queued, when the daemon is
    paused (SIGSTOP: a long pass, a swapped-out machine), then its run server still runs all
    four, one after another in the same process; once resumed, the daemon logs each of them as
    launched, after the run before it ended."""
    process, log = daemon("--interval", "0.1")
    first, rest = slow_run_and_queue(home, proj, url, 4)
    os.kill(process.pid, signal.SIGSTOP)
    try:
        done = wait_until(lambda: all_finished(url, rest), 20, what="the runs, daemon paused")
    finally:
        os.kill(process.pid, signal.SIGCONT)
    assert [run.status for run in done] == [RunStatus.SUCCESS] * 4
    [started] = runs_of(url, [first])
    assert {run.worker_pid for run in done} == {started.worker_pid}
    assert {run.launcher for run in done} == {started.launcher}  # the daemon's, as claims
    for before, run_id in zip([first, *rest[:-1]], rest, strict=True):
        wait_for_log(log, f"run {run_id} launched")
        text = log.read_text()
        assert text.index(f"run {before} SUCCESS") < text.index(f"run {run_id} launched")


def test_a_stopping_daemon_s_servers_take_no_more_runs(home, proj, url, daemon):
    """Given a daemon with one slot running a slow run and more queued, when the daemon is
    stopped, then its server finishes the run it has and ends: the queued runs stay QUEUED for
    the next daemon, not taken by a process nobody watches any more."""
    process, _ = daemon("--interval", "0.1")
    first, rest = slow_run_and_queue(home, proj, url, 2)
    server = runs_of(url, [first])[0].worker_pid
    process.send_signal(signal.SIGTERM)
    assert process.wait(20) == 0
    wait_until(lambda: runs_of(url, [first])[0].is_finished, 20, what="the slow run's end")
    wait_until(lambda: not pid_running(server), 20, what="the run server gone")
    assert runs_of(url, [first])[0].status == RunStatus.SUCCESS
    assert [run.status for run in runs_of(url, rest)] == [RunStatus.QUEUED] * 2


def test_a_server_takes_runs_until_runs_per_worker(home, proj, url, daemon):
    """Given `--runs-per-worker 2` and six quick runs queued at once, then each server process
    runs exactly two of them (taking the second itself), and all six succeed."""
    run_ids = [queue(home, proj, "quick_job") for _ in range(6)]
    daemon("--interval", "0.1", "--runs-per-worker", "2")
    done = wait_until(lambda: all_finished(url, run_ids), 30)
    assert [run.status for run in done] == [RunStatus.SUCCESS] * 6
    pids = [run.worker_pid for run in done]
    assert sorted(pids.count(pid) for pid in set(pids)) == [2, 2, 2]
    # The second run of each server was taken, and started, in the commit that ended the first:
    # their events follow each other in id order, nothing in between.
    with open_storage(url=url) as storage:
        for first, second in zip(done[::2], done[1::2], strict=True):
            assert first.worker_pid == second.worker_pid
            ends = [(e.event_id, e.event_type.value) for e in storage.events_for_run(first.run_id)][
                -2:
            ]
            starts = [
                (e.event_id, e.event_type.value) for e in storage.events_for_run(second.run_id)
            ]
            joined = ends + starts[1:4]  # (its RUN_ENQUEUED came long before)
            assert [kind for _, kind in joined] == [
                "STEP_SUCCESS",
                "RUN_SUCCESS",
                "RUN_STARTING",
                "RUN_START",
                "STEP_START",
            ]
            ids = [event_id for event_id, _ in joined]
            assert ids == list(range(ids[0], ids[0] + 5)), joined


def test_servers_take_no_runs_while_other_runs_fill_the_node(home, proj, url, daemon):
    """Given a daemon with one slot, and a run of another process in progress on the same node
    (`max_concurrent_runs` counts every run there), when its server's run ends, then it takes no
    queued run; once the other run ends, the queued runs run."""
    from runsense_cli.identity import ProcessId

    daemon("--interval", "0.1")
    first, _ = slow_run_and_queue(home, proj, url, 0)
    with open_storage(url=url) as storage:
        other = storage.create_run(
            "quick_job", "elsewhere", status=RunStatus.STARTING, worker=str(ProcessId.of())
        )
        other = storage.set_run_status(other, RunStatus.STARTED)
        rest = [queue(home, proj, "quick_job") for _ in range(2)]
        wait_until(lambda: runs_of(url, [first])[0].is_finished, 20, what="the slow run")
        time.sleep(1.0)  # ten full passes: room enough to take or launch, were there any
        assert [run.status for run in runs_of(url, rest)] == [RunStatus.QUEUED] * 2
        storage.set_run_status(other, RunStatus.SUCCESS)
        done = wait_until(lambda: all_finished(url, rest), 20, what="the queued runs")
    assert [run.status for run in done] == [RunStatus.SUCCESS] * 2


def test_a_run_queued_after_the_last_one_ended_starts_at_once(home, proj, url, daemon):
    """Given a daemon with one slot whose timed pass is 30 s away, when a run ends with nothing
    queued and another is queued later, then the new one starts at once: the server's report
    that it is free is read as it comes, not at the next timed pass."""
    daemon("--interval", "30")
    for _ in range(2):
        run_id = queue(home, proj, "quick_job")
        wait_until(lambda r=run_id: all_finished(url, [r]), 10, what="the run, at once")
