"""Warm run workers through real processes: a daemon forks each run's worker from itself (no new
interpreter), and the worker still behaves as a cold one does for output, failures, cancel, a
stopped daemon and code reloads."""

from __future__ import annotations

import contextlib
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
    query,
    start_daemon,
    stop,
    wait_for_log,
    wait_until,
)

pytestmark = pytest.mark.slow

PROJECT = """
import os, sys, time
from runsense_cli import DefaultSensorStatus, Definitions, job, op, run_failure_sensor

VERSION = "v1"

@op
def show():
    print(f"argv={' '.join(sys.argv)} version={VERSION} own_session={os.getsid(0) == os.getpid()}")

@job
def show_job():
    show()

@op
def bail():
    os._exit(3)

@job
def bail_job():
    bail()

@op
def nap():
    time.sleep(120)

@job
def sleepy():
    nap()

@op
def short_nap():
    time.sleep(1.0)

@job
def short_sleepy():
    short_nap()

@op
def close_all():
    os.closerange(3, 65536)  # the server's pipes and database too
    time.sleep(3)

@job
def closer_job():
    close_all()

@op
def close_outputs():
    os.close(1)
    os.close(2)

@job
def mute_job():
    close_outputs()

@op
def leave_a_thread():
    import threading

    def chatter():
        while True:
            print("leak", flush=True)
            time.sleep(0.02)

    threading.Thread(target=chatter, daemon=True).start()
    time.sleep(0.1)

@job
def leaky_job():
    leave_a_thread()

@op
def ignore_cancel():
    try:
        time.sleep(3)
    except BaseException:
        pass

@job
def stubborn_job():
    ignore_cancel()

@op
def until_released(context):
    path = context.run.tags["flag"]
    deadline = time.time() + 60
    while not os.path.exists(path) and time.time() < deadline:
        time.sleep(0.02)

@job
def held_job():
    until_released()

@run_failure_sensor(default_status=DefaultSensorStatus.RUNNING)
def on_failure(context):
    return None

defs = Definitions(
    jobs=[show_job, bail_job, sleepy, short_sleepy, closer_job, mute_job, leaky_job, stubborn_job,
          held_job],
    sensors=[on_failure],
)
"""


@pytest.fixture
def proj(project, home: Path):
    yield project(PROJECT, "warmdefs")
    kill_workers_in_progress(home)


@pytest.fixture
def daemon(home: Path, proj: Path, tmp_path: Path):
    started = []

    def start(name: str = "daemon", *extra: str) -> tuple[object, Path]:
        log = tmp_path / f"{name}.log"
        process = start_daemon(home, proj, log, "--interval", "0.1", *extra)
        started.append(process)
        wait_for_log(log, "daemon started")
        return process, log

    yield start
    for process in started:
        stop(process)


def queue(home: Path, proj: Path, job: str) -> str:
    done = cli(home, proj, "run", job, "--queue")
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def status(home: Path, run_id: str) -> str:
    return query(home, "SELECT status FROM runs WHERE run_id = ?", run_id)[0][0]


def wait_status(home: Path, run_id: str, wanted: str) -> None:
    wait_until(lambda: status(home, run_id) == wanted, 20, what=f"{run_id} {wanted}")


def worker_pid(home: Path, run_id: str) -> int:
    return query(home, "SELECT worker_pid FROM runs WHERE run_id = ?", run_id)[0][0]


def output(home: Path, proj: Path, run_id: str) -> str:
    done = cli(home, proj, "runs", "logs", run_id)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_daemon_launched_run_runs_in_a_worker_forked_from_the_daemon(home, proj, daemon):
    """Given a daemon, when a run is queued, then its op runs in a process with the daemon's
    command line (forked, no new interpreter) in a session of its own, and what it prints is in
    `runs logs`."""
    daemon()
    run_id = queue(home, proj, "show_job")
    wait_status(home, run_id, "SUCCESS")
    text = output(home, proj, run_id)
    assert " daemon --interval 0.1 version=v1 own_session=True" in text
    assert "_worker" not in text


@pytest.mark.parametrize("runs_per_worker", [None, "1"])
def test_one_run_server_runs_runs_one_after_another_each_with_its_own_log(
    home, proj, daemon, runs_per_worker
):
    """Given a daemon, when runs are queued one after another, then the same worker process
    runs them (one database connection for all), each run's output in its own log; with
    `--runs-per-worker 1` each run gets a fresh process."""
    daemon("daemon", *(["--runs-per-worker", runs_per_worker] if runs_per_worker else []))
    runs = []
    for _ in range(3):
        runs.append(queue(home, proj, "show_job"))
        wait_status(home, runs[-1], "SUCCESS")
    pids = {worker_pid(home, run_id) for run_id in runs}
    assert len(pids) == (3 if runs_per_worker else 1)
    for run_id in runs:
        assert output(home, proj, run_id).count("argv=") == 1


def test_runs_per_worker_from_the_settings_file_and_a_bad_value(home, proj, tmp_path):
    """`runs_per_worker` is read from runsense.toml like the other daemon settings; 0 is one
    clear line naming the file and what the key takes, exit 2, and no daemon starts."""
    (proj.parent / "runsense.toml").write_text("runs_per_worker = 0\n")
    done = cli(home, proj, "daemon", cwd=proj.parent)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"Error: {proj.parent / 'runsense.toml'}: runs_per_worker = 0 is not valid"
        " (runs_per_worker takes runs one warm worker process runs before a fresh one, >= 1)"
    ]
    (proj.parent / "runsense.toml").write_text("runs_per_worker = 1\n")
    log = tmp_path / "daemon.log"
    process = start_daemon(home, proj, log, "--interval", "0.1", cwd=proj.parent)
    try:
        wait_for_log(log, "daemon started")
        runs = []
        for _ in range(2):
            runs.append(queue(home, proj, "show_job"))
            wait_status(home, runs[-1], "SUCCESS")
        assert worker_pid(home, runs[0]) != worker_pid(home, runs[1])
    finally:
        stop(process)


def test_a_cancelled_run_s_process_runs_nothing_more(home, proj, daemon):
    """Given a run server whose run was cancelled (SIGTERM), then the next run gets another
    process: a signal meant for the cancelled run can never reach a run after it."""
    daemon()
    napping = queue(home, proj, "sleepy")
    wait_status(home, napping, "STARTED")
    pid = worker_pid(home, napping)
    done = cli(home, proj, "runs", "cancel", napping[:8])
    assert done.returncode == 0, done.stderr
    wait_status(home, napping, "CANCELED")
    after = queue(home, proj, "show_job")
    wait_status(home, after, "SUCCESS")
    assert worker_pid(home, after) != pid
    wait_until(lambda: not pid_running(pid), what="the cancelled run's process gone")


def test_a_run_that_closes_every_descriptor_does_not_stall_the_daemon(home, proj, daemon):
    """A run may close its server's pipes and go on: the daemon must not wait for it. Another
    run queued meanwhile succeeds while the first one still sleeps."""
    daemon()
    closer = queue(home, proj, "closer_job")
    wait_status(home, closer, "STARTED")
    started = time.monotonic()
    shown = queue(home, proj, "show_job")
    wait_status(home, shown, "SUCCESS")
    assert time.monotonic() - started < 2.0
    assert status(home, closer) == "STARTED"


def test_a_run_that_closes_its_outputs_leaves_the_next_run_its_own_log(home, proj, daemon):
    """A run that closes fds 1 and 2 succeeds; the next run in the same process still writes
    its output to its own log."""
    daemon()
    mute = queue(home, proj, "mute_job")
    wait_status(home, mute, "SUCCESS")
    after = queue(home, proj, "show_job")
    wait_status(home, after, "SUCCESS")
    assert worker_pid(home, after) == worker_pid(home, mute)
    assert output(home, proj, after).count("argv=") == 1


def test_a_run_that_leaves_a_thread_behind_is_its_process_s_last(home, proj, daemon):
    """A thread a run leaves running would print into the next run's log: the next run gets
    another process, and its log holds only its own output."""
    daemon()
    leaky = queue(home, proj, "leaky_job")
    wait_status(home, leaky, "SUCCESS")
    after = queue(home, proj, "show_job")
    wait_status(home, after, "SUCCESS")
    assert worker_pid(home, after) != worker_pid(home, leaky)
    assert "leak" not in output(home, proj, after)


def test_a_run_that_ends_success_over_a_cancel_is_its_process_s_last(home, proj, daemon):
    """An op that swallows the cancel ends SUCCESS over CANCELING: a later signal meant for
    it must find no other run in that process."""
    daemon()
    stubborn = queue(home, proj, "stubborn_job")
    wait_status(home, stubborn, "STARTED")
    done = cli(home, proj, "runs", "cancel", stubborn[:8])
    assert done.returncode in (0, 1), done.stderr
    wait_until(lambda: status(home, stubborn) in ("SUCCESS", "CANCELED"), 20)
    after = queue(home, proj, "show_job")
    wait_status(home, after, "SUCCESS")
    assert worker_pid(home, after) != worker_pid(home, stubborn)


def test_a_run_outliving_its_daemon_ends_without_an_error_line(home, proj, daemon):
    """The daemon stops while a run sleeps: the run ends SUCCESS on its own and its log says
    nothing about the daemon being gone."""
    process, _ = daemon()
    run_id = queue(home, proj, "short_sleepy")
    wait_status(home, run_id, "STARTED")
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=5) == 0
    wait_status(home, run_id, "SUCCESS")
    pid = worker_pid(home, run_id)
    wait_until(lambda: not pid_running(pid), what="the run's process gone")
    assert "Error" not in output(home, proj, run_id)


def test_cold_workers_when_asked(home, proj, daemon, monkeypatch):
    monkeypatch.setenv("RUNSENSE_COLD_WORKERS", "1")
    daemon()
    run_id = queue(home, proj, "show_job")
    wait_status(home, run_id, "SUCCESS")
    assert f"_worker {run_id} --home" in output(home, proj, run_id)


def test_a_forked_worker_that_exits_in_an_op_fails_its_run_with_the_code(home, proj, daemon):
    """When an op calls os._exit(3), the run becomes FAILURE naming the exit code, at once
    (the daemon is woken by the worker's end), and the failure sensor reacts."""
    daemon()
    run_id = queue(home, proj, "bail_job")
    wait_status(home, run_id, "FAILURE")
    pid = worker_pid(home, run_id)
    [(message,)] = query(
        home, "SELECT message FROM events WHERE run_id = ? AND event_type = 'RUN_FAILURE'", run_id
    )
    assert f"Run worker (pid {pid}) exited with code 3 before the run finished." in message
    reacted = (
        "SELECT r.state FROM reactions r JOIN sensors s ON s.id = r.sensor_id"
        " WHERE s.name = 'on_failure' AND r.run_id = ?"
    )
    assert wait_until(lambda: query(home, reacted, run_id), 10) == [("SUCCESS",)]


def test_a_forked_worker_is_canceled_and_does_not_hold_the_daemons_lock(home, proj, daemon):
    """Given a daemon running a long run in a forked worker, when the daemon is stopped, then a
    new daemon starts at once (the worker does not hold the home's lock) while the worker goes
    on; and `runs cancel` ends the run CANCELED."""
    first, _ = daemon("first")
    run_id = queue(home, proj, "sleepy")
    wait_status(home, run_id, "STARTED")
    pid = worker_pid(home, run_id)
    assert b" daemon" in Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=5) == 0
    assert pid_running(pid)
    _, log = daemon("second")
    assert "already running" not in log.read_text()
    done = cli(home, proj, "runs", "cancel", run_id[:8])
    assert done.returncode == 0, done.stderr
    wait_status(home, run_id, "CANCELED")
    wait_until(lambda: not pid_running(pid), what="the worker gone")


def test_runs_launched_after_a_reload_use_the_new_code(home, proj, daemon):
    _, log = daemon()
    first = queue(home, proj, "show_job")
    wait_status(home, first, "SUCCESS")
    proj.write_text(PROJECT.replace('VERSION = "v1"', 'VERSION = "v2"'))
    later = time.time() + 5
    os.utime(proj, (later, later))  # a different mtime even on a coarse clock
    wait_for_log(log, "project reloaded", timeout=10)
    second = queue(home, proj, "show_job")
    wait_status(home, second, "SUCCESS")
    assert "version=v1" in output(home, proj, first)
    assert "version=v2" in output(home, proj, second)


def test_a_server_busy_during_a_reload_takes_no_run_with_the_old_code(home, proj, daemon, tmp_path):
    """Given a server running a run when the code changes, when a run is queued after the
    reload, then that run runs the new code: the busy server, which would otherwise take it
    itself when its run ends, takes nothing more."""
    _, log = daemon("daemon", "--max-concurrent-runs", "1")
    flag = tmp_path / "release"
    done = cli(home, proj, "run", "held_job", "--queue", "--tag", f"flag={flag}")
    assert done.returncode == 0, done.stderr
    busy = done.stdout.strip()
    wait_status(home, busy, "STARTED")
    proj.write_text(PROJECT.replace('VERSION = "v1"', 'VERSION = "v2"'))
    later = time.time() + 5
    os.utime(proj, (later, later))
    wait_for_log(log, "project reloaded", timeout=10)
    queued = queue(home, proj, "show_job")
    flag.write_text("")  # the busy run ends only now, with a run queued behind it
    wait_status(home, queued, "SUCCESS")
    assert status(home, busy) == "SUCCESS"
    assert "version=v2" in output(home, proj, queued)
    assert worker_pid(home, queued) != worker_pid(home, busy)


def test_a_forked_process_keeps_its_commits_when_the_parent_closes_the_database(home):
    """SQLite shares lock state between a parent's connection and a forked child's: without
    the locks `hold_in_fork` takes, the parent's close deletes the WAL under the child."""
    parent = open_storage(home)
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            parent.hold_in_fork()
            child = open_storage(home)
            os.write(ready_w, b"1")
            os.read(go_r, 1)  # the parent has closed its connection
            child.create_run("late_job", "here", status=RunStatus.QUEUED)
            code = 0
        finally:
            os._exit(code)
    os.read(ready_r, 1)
    parent.close()
    os.write(go_w, b"1")
    _, exit_status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(exit_status) == 0
    assert query(home, "SELECT job_name FROM runs") == [("late_job",)]


@pytest.mark.postgres
def test_warm_workers_on_postgresql(home, proj, daemon, pg_url, monkeypatch):
    """The same on PostgreSQL: the forked worker opens a connection of its own; a run succeeds
    with its output in `runs logs`, and an op's os._exit fails its run with the code."""
    monkeypatch.setenv("RUNSENSE_DATABASE_URL", pg_url)
    daemon()
    shown, bailed = queue(home, proj, "show_job"), queue(home, proj, "bail_job")
    with open_storage(url=pg_url) as storage:

        def finished(run_id: str) -> object:
            run = storage.get_run(run_id)
            return run if run.is_finished else None

        assert wait_until(lambda: finished(shown), 20).status == RunStatus.SUCCESS
        failed = wait_until(lambda: finished(bailed), 20)
        assert failed.status == RunStatus.FAILURE
        [message] = [
            e.message for e in storage.events_for_run(bailed) if e.event_type.value == "RUN_FAILURE"
        ]
    assert "exited with code 3 before the run finished" in message
    assert " daemon --interval 0.1 version=v1" in output(home, proj, shown)


def _socket_inodes(pid: int) -> set[str]:
    found = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:"):
                found.add(target)
    return found


@pytest.mark.postgres
def test_a_run_server_holds_none_of_the_daemons_database_sessions(
    home, proj, daemon, pg_url, monkeypatch
):
    """A run server must not keep a copy of its daemon's sockets: a daemon killed inside a
    write transaction would otherwise leave its session, and PostgreSQL's write lock, held for
    as long as the server runs, and every daemon and worker would wait for it."""
    monkeypatch.setenv("RUNSENSE_DATABASE_URL", pg_url)
    process, _ = daemon()
    run_id = queue(home, proj, "sleepy")
    with open_storage(url=pg_url) as storage:
        wait_until(lambda: storage.get_run(run_id).status == RunStatus.STARTED, 20)
        server = storage.get_run(run_id).worker_pid
    try:
        daemon_sockets = _socket_inodes(process.pid)
        assert daemon_sockets and _socket_inodes(server)
        assert not daemon_sockets & _socket_inodes(server)
    finally:  # its run sleeps, and on a dropped database it would retry for ever
        os.kill(server, signal.SIGKILL)
        wait_until(lambda: not pid_running(server), what="the run server gone")


def test_a_served_run_names_its_process_before_the_launcher_returns(home, proj):
    """A launcher may exit right after launching (`sensor tick --no-wait`) or be killed: the
    run must already name the process that will run it, or a daemon would fail it as a run
    whose launcher died before any worker started. A new server is named right after it is
    forked; an idle one in the claim itself."""
    from runsense_cli.identity import ProcessId
    from runsense_cli.launcher import RunLauncher
    from runsense_cli.project import find_project, load_project
    from runsense_cli.worker import LoadedProject

    ref = find_project(file=str(proj))
    with open_storage(home) as storage:
        launcher = RunLauncher(
            storage, home, project=LoadedProject(ref.to_origin(), load_project(ref))
        )
        try:
            for _ in range(2):  # a new server, then the same one, idle
                run_id = queue(home, proj, "show_job")
                assert launcher.launch_queued() == [run_id]
                worker = storage.get_run(run_id).worker
                assert worker == str(ProcessId.of(launcher.children[run_id].pid))
                wait_until(lambda r=run_id: not launcher.reap() and storage.get_run(r).is_finished)
                assert storage.get_run(run_id).status == RunStatus.SUCCESS
        finally:
            launcher.close()
