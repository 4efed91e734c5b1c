"""The races issue 8 found, each with real processes: two launchers on the same queued runs, two
processes noticing one dead worker, a daemon paused past its lease, user commands during a drain,
a reused pid, and a worker that dies before it confirms its claim."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from runsense_cli.identity import ProcessId, node_name
from runsense_cli.launcher import RunLauncher
from runsense_cli.project import find_project, load_project
from runsense_cli.runs import RunStatus
from runsense_cli.storage import open_storage
from tests.processes import cli, env_for, query, start_daemon, stop, wait_until

pytestmark = pytest.mark.slow

PROJECT = """
import os, time
from pathlib import Path
from runsense_cli import DefaultSensorStatus, Definitions, RunStatus, job, op, run_status_sensor

@op
def nap():
    time.sleep(0.1)

@job
def nap_job():
    nap()

@op
def quick():
    return 1

@job
def source_job():
    quick()

@run_status_sensor(run_status=RunStatus.SUCCESS, monitored_jobs=[source_job],
                   default_status=DefaultSensorStatus.RUNNING)
def slow(context):
    with open(os.environ["CALLS_FILE"], "a") as calls:
        calls.write(f"{os.getpid()} {context.dagster_run.run_id}\\n")
    time.sleep(float(os.environ.get("CALL_SECONDS", "0.03")))

defs = Definitions(jobs=[nap_job, source_job], sensors=[slow])
"""

LAUNCH_LOOP = """
import sys, time
from pathlib import Path
from runsense_cli.launcher import RunLauncher
from runsense_cli.runs import IN_PROGRESS_STATUSES, RunStatus
from runsense_cli.storage import open_storage

home = Path(sys.argv[1])
storage = open_storage(home)
launcher = RunLauncher(storage, home, 3)
deadline = time.monotonic() + 90
while time.monotonic() < deadline:
    launcher.launch_queued()
    launcher.fail_dead_runs()
    busy = storage.runs_with_status([RunStatus.QUEUED, *IN_PROGRESS_STATUSES])
    if not busy and not launcher.children:
        break
    time.sleep(0.01)
"""


@pytest.fixture
def proj(project, tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("CALLS_FILE", str(tmp_path / "calls.txt"))
    return project(PROJECT)


def calls(tmp_path: Path) -> list[tuple[int, str]]:
    path = tmp_path / "calls.txt"
    if not path.exists():
        return []
    return [(int(p), r) for p, r in (line.split() for line in path.read_text().splitlines())]


def test_two_launchers_on_the_same_queued_runs_start_each_once_and_fail_none(home, proj):
    """The daemon + `sensor tick` race: each run has one worker, one start, one SUCCESS."""
    ref = find_project(file=str(proj))
    with open_storage(home) as storage:
        queued = [
            storage.create_run(
                "nap_job", ref.location, status=RunStatus.QUEUED, origin=ref.to_origin()
            ).run_id
            for _ in range(18)
        ]
    launchers = [
        subprocess.Popen([sys.executable, "-c", LAUNCH_LOOP, str(home)], env=env_for(home))
        for _ in range(2)
    ]
    for launcher in launchers:
        assert launcher.wait(120) == 0
    starts = Counter(
        r for (r,) in query(home, "SELECT run_id FROM events WHERE event_type = 'RUN_START'")
    )
    statuses = dict(query(home, "SELECT run_id, status FROM runs"))
    failures = query(home, "SELECT count(*) FROM events WHERE event_type = 'RUN_FAILURE'")
    assert all(starts[r] == 1 for r in queued)
    assert {statuses[r] for r in queued} == {"SUCCESS"}
    assert failures == [(0,)]


def test_two_processes_noticing_one_dead_worker_write_one_failure(home):
    with open_storage(home) as storage:
        gone = subprocess.Popen([sys.executable, "-c", "pass"])
        gone.wait()
        run = storage.create_run(
            "job", "loc", status=RunStatus.STARTING, worker=str(ProcessId.of(gone.pid))
        )
        storage.set_run_status(run, RunStatus.STARTED)
    barrier = threading.Barrier(2)
    found: list[int] = []

    def notice() -> None:
        with open_storage(home) as storage:
            launcher = RunLauncher(storage, home)
            barrier.wait()
            found.append(len(launcher.fail_dead_runs()))

    threads = [threading.Thread(target=notice) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(found) == [0, 1]
    events = query(home, "SELECT event_type FROM events WHERE run_id = ?", run.run_id)
    assert [e for (e,) in events].count("RUN_FAILURE") == 1


def test_a_daemon_paused_past_its_lease_calls_nothing_more_and_commits_nothing(
    home, proj, tmp_path, monkeypatch
):
    """SIGSTOP the daemon mid-drain past its (1 s) lease; `sensor tick` takes the sensor over and
    drains it; SIGCONT: the daemon makes no further call of the sensor function, and every event
    ends with exactly one reaction."""
    monkeypatch.setenv("RUNSENSE_LEASE_TTL", "1")
    monkeypatch.setenv("CALL_SECONDS", "0.05")
    assert cli(home, proj, "sensor", "list").returncode == 0  # `slow` starts now
    monkeypatch.setenv("RUNSENSE_HOME", str(home))
    source = load_project(find_project(file=str(proj))).get_job("source_job")
    for _ in range(60):
        source.execute_in_process()
    log = tmp_path / "daemon.log"
    daemon = start_daemon(home, proj, log, "--page-size", "20", "--interval", "0.05")
    try:
        wait_until(lambda: len(calls(tmp_path)) >= 5, what="the daemon's first calls")
        daemon.send_signal(signal.SIGSTOP)
        time.sleep(2.0)  # past the 1 s lease
        paused_calls = sum(1 for pid, _ in calls(tmp_path) if pid == daemon.pid)
        took_over = cli(home, proj, "sensor", "tick", "slow", "--no-wait")
        assert took_over.returncode == 0, took_over.stderr
        daemon.send_signal(signal.SIGCONT)
        time.sleep(1.5)
        after = sum(1 for pid, _ in calls(tmp_path) if pid == daemon.pid)
    finally:
        daemon.send_signal(signal.SIGCONT)
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(10)
        finally:
            stop(daemon)
    assert after == paused_calls, "the resumed daemon called the sensor for events it lost"
    reactions = query(home, "SELECT event_id, count(*) FROM reactions GROUP BY event_id")
    assert len(reactions) == 60 and all(n == 1 for _, n in reactions)


@pytest.mark.parametrize("command", ["stop", "from-now"])
def test_a_user_command_during_a_drain_wins_at_the_next_page(
    home, proj, tmp_path, monkeypatch, command
):
    monkeypatch.setenv("CALL_SECONDS", "0.02")
    monkeypatch.setenv("RUNSENSE_HOME", str(home))
    assert cli(home, proj, "sensor", "list").returncode == 0
    source = load_project(find_project(file=str(proj))).get_job("source_job")
    for _ in range(150):
        source.execute_in_process()
    log = tmp_path / "daemon.log"
    daemon = start_daemon(home, proj, log, "--page-size", "10", "--interval", "0.05")
    try:
        wait_until(lambda: len(calls(tmp_path)) >= 15, what="the drain under way")
        args = (
            ("sensor", "stop", "slow")
            if command == "stop"
            else ("sensor", "cursor", "slow", "--from-now")
        )
        assert cli(home, proj, *args).returncode == 0
        [(set_to,)] = query(home, "SELECT cursor FROM sensors WHERE name = 'slow'")
        # The page in flight finishes; then no call for a whole second (a drain that kept going
        # would call every 20 ms until all 150 events were handled).
        last, quiet_since = len(calls(tmp_path)), time.monotonic()
        while time.monotonic() - quiet_since < 1.0:
            time.sleep(0.1)
            if (now := len(calls(tmp_path))) != last:
                last, quiet_since = now, time.monotonic()
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(10)
        finally:
            stop(daemon)
    [(reacted,)] = query(home, "SELECT count(*) FROM reactions")
    [(cursor, status)] = query(home, "SELECT cursor, status FROM sensors WHERE name = 'slow'")
    assert reacted < 150
    if command == "stop":
        assert status == "STOPPED"
    else:
        assert cursor >= set_to  # never written back below the user's cursor by the drain


def test_a_reused_pid_does_not_keep_a_dead_worker_alive():
    me = ProcessId.of()
    assert me.alive() is True
    assert ProcessId(node_name(), os.getpid(), "1").alive() is False  # same pid, other process
    assert ProcessId("another-node", os.getpid(), me.start).alive() is None  # ask its heartbeat


def test_a_worker_that_dies_before_confirming_its_claim_fails_its_run_once(home):
    class CrashingLauncher(RunLauncher):
        def _spawn(self, run: object, token: str, take: object) -> subprocess.Popen[bytes]:
            return subprocess.Popen([sys.executable, "-c", "import sys; sys.exit(3)"])

    with open_storage(home) as storage:
        run = storage.create_run("job", "loc", status=RunStatus.QUEUED)
        launcher = CrashingLauncher(storage, home)
        assert launcher.launch_queued() == [run.run_id]
        wait_until(lambda: launcher.reap() or not launcher.children)
        [dead] = launcher.fail_dead_runs()
        assert "exited with code 3 before the run finished" in dead.reason
        assert launcher.launch_queued() == []  # not relaunched, ever
        assert storage.get_run(run.run_id).status == RunStatus.FAILURE


LAUNCH_ONCE = """
import sys
from pathlib import Path
from runsense_cli.launcher import RunLauncher
from runsense_cli.storage import open_storage

home = Path(sys.argv[1])
RunLauncher(open_storage(home), home, 3).launch_queued()  # then exit, like `sensor tick --no-wait`
"""


def test_a_launcher_that_exits_at_once_leaves_its_run_to_its_worker(home, proj):
    """Review finding: a run STARTING with no registered worker was judged by its launcher, so
    a `sensor tick --no-wait` that exits at once got its runs failed by the daemon."""
    ref = find_project(file=str(proj))
    with open_storage(home) as storage:
        run = storage.create_run(
            "nap_job", ref.location, status=RunStatus.QUEUED, origin=ref.to_origin()
        )
        launcher_process = subprocess.run(
            [sys.executable, "-c", LAUNCH_ONCE, str(home)], env=env_for(home), timeout=60
        )
        assert launcher_process.returncode == 0
        daemon = RunLauncher(storage, home)
        deadline = time.monotonic() + 30
        while not storage.get_run(run.run_id).is_finished and time.monotonic() < deadline:
            assert daemon.fail_dead_runs() == []
            time.sleep(0.02)
        assert storage.get_run(run.run_id).status == RunStatus.SUCCESS


def test_a_process_of_another_pid_space_is_judged_by_its_heartbeat():
    """Review finding: a container sharing the host's name but not its pids."""
    me = ProcessId.of()
    assert ProcessId(me.node, me.pid, me.start, "other-boot:4026531999").alive() is None


def test_a_remote_run_fails_only_after_its_beat_stood_still_while_watched(home):
    with open_storage(home) as storage:
        run = storage.create_run(
            "job", "loc", status=RunStatus.STARTING, worker="far-away/7/1/x", now=1.0
        )
        storage.set_run_status(run, RunStatus.STARTED)
        storage.heartbeat_runs([run.run_id])  # an old beat is not yet a dead worker
        launcher = RunLauncher(storage, home, heartbeat_timeout=0.3)
        assert launcher.fail_dead_runs() == []
        time.sleep(0.2)
        storage.heartbeat_runs([run.run_id])  # it beats: the clock starts again
        assert launcher.fail_dead_runs() == []
        time.sleep(0.2)
        assert launcher.fail_dead_runs() == []
        time.sleep(0.2)
        [dead] = launcher.fail_dead_runs()
        assert "sent no heartbeat for over 0.3 s" in dead.reason
