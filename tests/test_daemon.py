"""The daemon and run workers as real processes (SPEC §4, §5, §9).

Reaction latency, SIGTERM/SIGINT, one daemon per home, a run worker killed with SIGKILL, and run
workers that outlive a stopped daemon and are adopted by the next one.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runsense_cli.project import find_project, load_project
from tests.processes import (
    RUNSENSE_SCRIPT,
    cli,
    env_for,
    kill_workers_in_progress,
    pid_running,
    query,
    start_daemon,
    stop,
    wait_for_log,
    wait_until,
)

pytestmark = pytest.mark.slow

# FLAGS is filled in per test: a directory whose files release (or fix) things from the outside.
PROJECT = """
import os
import time
from runsense_cli import (
    DefaultSensorStatus, Definitions, RunRequest, RunStatus, SkipReason, job, op,
    run_failure_sensor, run_status_sensor,
)

FLAGS = {flags!r}

@op
def quick():
    return 1

@job
def quick_job():
    quick()

@op
def wait_for_flag(context):
    # Runs until the file named by the run's `flag` tag exists (a minute at most).
    path = os.path.join(FLAGS, context.run.tags["flag"])
    deadline = time.time() + 60
    while not os.path.exists(path):
        if time.time() > deadline:
            raise TimeoutError("flag " + path + " never appeared")
        time.sleep(0.02)

@job
def waiting_job():
    wait_for_flag()

@run_status_sensor(run_status=RunStatus.SUCCESS, monitored_jobs=[quick_job],
                   default_status=DefaultSensorStatus.RUNNING)
def on_quick(context):
    return None

@run_status_sensor(run_status=RunStatus.SUCCESS, monitored_jobs=[quick_job], request_job=waiting_job,
                   default_status=DefaultSensorStatus.RUNNING)
def chain(context):
    flag = context.dagster_run.tags.get("flag")
    if flag is None:
        return SkipReason("no flag tag")
    return RunRequest(run_key=context.dagster_run.run_id, tags={{"flag": flag}})

@run_status_sensor(run_status=RunStatus.SUCCESS, monitored_jobs=[waiting_job],
                   default_status=DefaultSensorStatus.RUNNING)
def on_waiting_success(context):
    return None

@run_failure_sensor(default_status=DefaultSensorStatus.RUNNING)
def on_failure(context):
    return None

defs = Definitions(jobs=[quick_job, waiting_job],
                   sensors=[on_quick, chain, on_waiting_success, on_failure])
"""

REACTION_OF = (
    "SELECT r.state, r.created_at FROM reactions r JOIN sensors s ON s.id = r.sensor_id"
    " WHERE s.name = ? AND r.run_id = ?"
)


@pytest.fixture
def flags(tmp_path: Path) -> Path:
    directory = tmp_path / "flags"
    directory.mkdir()
    return directory


@pytest.fixture
def proj(project, flags: Path) -> Path:
    return project(PROJECT.format(flags=str(flags)))


@pytest.fixture
def daemons(home: Path, proj: Path, tmp_path: Path):
    """Start daemons on `proj` (each logging to its own file); all gone after the test, as are
    the run workers of runs still in progress."""
    started = []

    def start(*args: str, name: str = "daemon", command: list[str] | None = None):
        log = tmp_path / f"{name}.log"
        process = start_daemon(home, proj, log, *args, command=command)
        started.append(process)
        wait_for_log(log, "daemon started")
        return process, log

    yield start
    for process in started:
        stop(process)
    kill_workers_in_progress(home)


def _run_id(home: Path, job: str, flag: str) -> str:
    [(run_id,)] = wait_until(
        lambda: query(
            home,
            "SELECT run_id FROM runs WHERE job_name = ? AND json_extract(tags, '$.flag') = ?",
            job,
            flag,
        ),
        what=f"a {job} run with flag {flag}",
    )
    return run_id


def _started_worker(home: Path, run_id: str) -> int:
    [(pid,)] = wait_until(
        lambda: query(
            home, "SELECT worker_pid FROM runs WHERE run_id = ? AND status = 'STARTED'", run_id
        ),
        what=f"run {run_id} STARTED",
    )
    return pid


def _status(home: Path, run_id: str) -> str:
    return query(home, "SELECT status FROM runs WHERE run_id = ?", run_id)[0][0]


# -- 1. latency -----------------------------------------------------------------------------------


@pytest.mark.parametrize("interval", [None, "30"], ids=["default", "backstop-30s"])
def test_the_daemon_reacts_to_a_cli_run_within_a_second(home, proj, daemons, interval):
    """Given a daemon with default settings (0.5 s passes), or whose timed pass comes only every
    30 s (the passes a change wakes do the work),
    when `runsense run quick_job` succeeds in another process, five times,
    then each reaction is stored less than 1 s after the run's RUN_SUCCESS event."""
    _, log = daemons(*(["--interval", interval] if interval else []))
    latencies = []
    for _ in range(5):
        result = cli(home, proj, "run", "quick_job")
        assert result.returncode == 0, result.stderr
        [run_id] = [
            r for (r,) in query(home, "SELECT run_id FROM runs ORDER BY created_at DESC LIMIT 1")
        ]
        wait_until(lambda run_id=run_id: query(home, REACTION_OF, "on_quick", run_id), timeout=10)
        [(event_type, ended, reacted)] = query(
            home,
            "SELECT e.event_type, e.timestamp, r.created_at FROM reactions r"
            " JOIN sensors s ON s.id = r.sensor_id JOIN events e ON e.id = r.event_id"
            " WHERE s.name = 'on_quick' AND r.run_id = ?",
            run_id,
        )
        assert event_type == "RUN_SUCCESS"
        latencies.append(reacted - ended)
    print(
        "\ndaemon latency, RUN_SUCCESS -> reaction stored (default 0.5 s interval): "
        + ", ".join(f"{s * 1000:.0f} ms" for s in latencies)
        + f"; median {statistics.median(latencies) * 1000:.0f} ms"
    )
    assert all(0 <= s < 1.0 for s in latencies), latencies
    assert log.read_text().count("tick on_quick: SUCCESS events=1 reactions=1") == 5


# -- 2. signals -----------------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_the_daemon_within_5s_with_exit_0(home, proj, daemons, signum):
    """Given a daemon that has handled a run,
    when it receives SIGTERM (or SIGINT, as Ctrl-C sends),
    then it exits 0 within 5 s, saying so, with no traceback, and its lock is free again."""
    process, log = daemons("--interval", "0.1")
    assert cli(home, proj, "run", "quick_job").returncode == 0
    wait_for_log(log, "tick on_quick: SUCCESS")
    process.send_signal(signum)
    sent = time.monotonic()
    assert process.wait(timeout=5) == 0
    assert time.monotonic() - sent < 5
    text = log.read_text()
    assert "daemon stopping" in text
    assert "Traceback" not in text and "KeyboardInterrupt" not in text
    # the lock went with it: a new daemon starts on the same home
    daemons("--interval", "0.1", name="next")


SLOW_PROJECT = """
import os
import time
from runsense_cli import DefaultSensorStatus, Definitions, RunStatus, job, op, run_status_sensor

CALLS, FAST = {calls!r}, {fast!r}

@op
def one():
    return 1

@job
def source_job():
    one()

@run_status_sensor(run_status=RunStatus.SUCCESS, default_status=DefaultSensorStatus.RUNNING)
def slow(context):
    with open(CALLS, "a") as handle:
        handle.write(context.dagster_run.run_id + "\\n")
    if not os.path.exists(FAST):
        time.sleep(0.05)  # 150 events: a 7.5 s page

defs = Definitions(jobs=[source_job], sensors=[slow])
"""


def test_sigterm_in_the_middle_of_a_long_page_still_stops_within_5s(home, project, tmp_path):
    """Given a daemon draining 150 waiting events through a slow sensor, all in one 7.5 s page,
    when it receives SIGTERM a few reactions into the page,
    then it stores the reactions already made, exits 0 within 5 s, and the next daemon handles
    the rest: every event ends with exactly one stored reaction and one call."""
    calls, fast = tmp_path / "calls.txt", tmp_path / "fast"
    path = project(SLOW_PROJECT.format(calls=str(calls), fast=str(fast)))
    assert cli(home, path, "sensor", "list").returncode == 0  # `slow` starts now
    source_job = load_project(find_project(file=str(path))).get_job("source_job")
    for _ in range(150):
        source_job.execute_in_process(home=str(home))
    log = tmp_path / "daemon.log"
    daemon = start_daemon(home, path, log, "--interval", "0.1")
    try:
        wait_until(lambda: calls.exists() and len(calls.read_text().split()) >= 5, timeout=20)
        daemon.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        code = daemon.wait(timeout=10)
        took = time.monotonic() - sent
        assert (code, took < 5) == (0, True), f"exit {code} after {took:.1f}s"
        [(stored,)] = query(home, "SELECT count(*) FROM reactions")
        assert 5 <= stored < 150  # the part of the page already done was committed
        fast.touch()
        daemon = start_daemon(home, path, log, "--interval", "0.1")
        wait_until(lambda: query(home, "SELECT count(*) FROM reactions") == [(150,)])
    finally:
        stop(daemon)
    per_run = query(home, "SELECT run_id, count(*) FROM reactions GROUP BY run_id")
    assert len(per_run) == 150 and {n for _, n in per_run} == {1}
    assert len(calls.read_text().split()) == 150  # nothing done before the stop was redone


# -- 3. one daemon per home -------------------------------------------------------------------------


def test_a_second_daemon_on_the_same_home_exits_2_naming_the_first(home, proj, daemons):
    """Given a running daemon,
    when a second `runsense daemon` (the console script) starts on the same home,
    then it exits 2 at once with one line naming the first one's pid, and the first runs on."""
    first, _ = daemons("--interval", "0.1")
    second = subprocess.run(
        [*RUNSENSE_SCRIPT, "-f", str(proj), "daemon"],
        env=env_for(home),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert second.returncode == 2
    assert f"pid {first.pid}" in second.stderr
    assert "already running" in second.stderr
    assert "Traceback" not in second.stderr and second.stdout == ""
    assert first.poll() is None


# -- 4. a killed run worker ------------------------------------------------------------------------


def test_a_run_worker_killed_with_sigkill_fails_its_run_and_fires_failure_sensors(
    home, proj, daemons
):
    """Given a daemon that launched a requested run whose op waits (a flag never set),
    when the run's worker (runs.worker_pid) is killed with SIGKILL,
    then the run becomes FAILURE with a reason naming SIGKILL, the failure sensor reacts to it,
    and the daemon's log says so."""
    _, log = daemons("--interval", "0.1")
    assert cli(home, proj, "run", "quick_job", "--tag", "flag=never").returncode == 0
    run_id = _run_id(home, "waiting_job", "never")
    pid = _started_worker(home, run_id)
    assert pid_running(pid)
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: _status(home, run_id) == "FAILURE", timeout=10)
    [(message,)] = query(
        home, "SELECT message FROM events WHERE run_id = ? AND event_type = 'RUN_FAILURE'", run_id
    )
    assert f"Run worker (pid {pid}) was killed by SIGKILL before the run finished." in message
    [(state, _)] = wait_until(lambda: query(home, REACTION_OF, "on_failure", run_id), timeout=10)
    assert state == "SUCCESS"
    wait_for_log(log, f"run {run_id} FAILURE: Run worker (pid {pid}) was killed by SIGKILL")
    assert f"run {run_id} launched" in log.read_text()


# -- 5. workers outlive a stopped daemon -----------------------------------------------------------


@pytest.fixture
def orphans():
    """Make this test process the subreaper of its descendants (Linux), as a container's PID 1
    that never reaps would be: a killed orphan worker then stays a zombie until the test reaps
    it. Yields the list to put such pids in; they are killed and reaped afterwards."""
    pids: list[int] = []
    libc = None
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
            libc = None
    yield pids
    if libc is not None:
        libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


PR_SET_CHILD_SUBREAPER = 36


def test_run_workers_outlive_a_stopped_daemon_and_the_next_one_adopts_them(
    home, proj, daemons, flags, orphans
):
    """Given a daemon running two requested runs whose ops wait for flags,
    when the daemon is stopped (SIGTERM), one worker is then killed while no daemon runs (and
    nobody reaps it: it stays a zombie), and a new daemon starts,
    then the first daemon left both workers running; the new one fails the run whose worker is
    gone (and the failure sensor fires), leaves the live one alone, and when that run's flag is
    set the run finishes SUCCESS and the new daemon reacts to it."""
    first, _ = daemons("--interval", "0.1", name="first")
    for flag in ("finish", "die"):
        assert cli(home, proj, "run", "quick_job", "--tag", f"flag={flag}").returncode == 0
    finish, die = _run_id(home, "waiting_job", "finish"), _run_id(home, "waiting_job", "die")
    finish_pid, die_pid = _started_worker(home, finish), _started_worker(home, die)
    orphans += [finish_pid, die_pid]

    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=5) == 0
    assert pid_running(finish_pid) and pid_running(die_pid)
    assert (_status(home, finish), _status(home, die)) == ("STARTED", "STARTED")
    os.kill(die_pid, signal.SIGKILL)

    _, log = daemons("--interval", "0.1", name="second")
    wait_until(lambda: _status(home, die) == "FAILURE", timeout=5)
    [(message,)] = query(
        home, "SELECT message FROM events WHERE run_id = ? AND event_type = 'RUN_FAILURE'", die
    )
    assert f"Run worker (pid {die_pid}) is gone and the run never finished." in message
    wait_until(lambda: query(home, REACTION_OF, "on_failure", die), timeout=10)
    assert f"run {die} FAILURE" in log.read_text()

    time.sleep(0.5)  # several passes of the new daemon
    assert _status(home, finish) == "STARTED" and pid_running(finish_pid)
    (flags / "finish").touch()
    wait_until(lambda: _status(home, finish) == "SUCCESS", timeout=10)
    [(state, _)] = wait_until(
        lambda: query(home, REACTION_OF, "on_waiting_success", finish), timeout=10
    )
    assert state == "SUCCESS"
    # adopted, never launched twice: one RUN_STARTING for each requested run
    assert query(
        home,
        "SELECT count(*) FROM events WHERE event_type = 'RUN_STARTING' AND run_id IN (?, ?)",
        finish,
        die,
    ) == [(2,)]
