"""User code is contained (SPEC §13 and §9, round 2): a catalogue of misbehaving sensor functions,
each under `runsense sensor tick` and all at once under the daemon beside healthy sensors.

Whatever a sensor function raises or does to its process (`SystemExit`, `KeyboardInterrupt`,
another `BaseException`, `os._exit`, a segfault, SIGKILL, abort, a hang), the result is a failed
reaction for that event saying what the function did, retried and then parked; the healthy
sensors' reactions all arrive, requested runs launch, and the daemon is alive at the end. A slow
sensor (sleeping 30 s) delays no other sensor and no run launch.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.processes import (
    cli,
    pid_running,
    query,
    start_daemon,
    stop,
    wait_for_log,
    wait_until,
)

# name: (the body of the sensor function, what its failed reaction must say)
CATALOGUE: dict[str, tuple[str, str]] = {
    "sys_exit": ("sys.exit()", "raised SystemExit, which would end its process"),
    "system_exit_3": ("raise SystemExit(3)", "raised SystemExit: 3, which would end its process"),
    "keyboard_interrupt": ("raise KeyboardInterrupt", "raised KeyboardInterrupt"),
    "base_exception": ('raise Doom("the end")', "raised Doom: the end, which would end"),
    "generator_exit": ("raise GeneratorExit", "raised GeneratorExit"),
    "os_exit_0": ("os._exit(0)", "ended its process with exit code 0"),
    "os_exit_7": ("os._exit(7)", "ended its process with exit code 7"),
    "segfault": ("ctypes.string_at(0)", "ended its process: SIGSEGV (a segmentation fault)"),
    "kill_9_itself": ("os.kill(os.getpid(), signal.SIGKILL)", "ended its process: SIGKILL"),
    "abort": ("os.abort()", "ended its process: SIGABRT"),
    "hang": ("time.sleep(3600)", "did not return within 1 s (the sensor_timeout setting)"),
    "spin": ("while True: pass", "did not return within 1 s"),
    "tags_list": (
        'return RunRequest(job_name="target_job", tags=["a"])',
        "RunRequest.tags must be a mapping of str to str, got list",
    ),
    "date_config": (
        'return RunRequest(job_name="target_job", run_config={"d": datetime.date(2024, 1, 2)})',
        "a date is not a JSON value",
    ),
    "nan_config": (
        'return RunRequest(job_name="target_job", run_config={"x": float("nan")})',
        "nan is not allowed",
    ),
    "skip_int": ("return SkipReason(404)", "skip_message must be a str, got int"),
    "garbage": ("return object()", "returned <object object"),
}
# Failures runsense knows cannot get better on a retry are parked at once (attempts 1).
PERMANENT = {"tags_list", "date_config", "nan_config", "skip_int", "garbage"}

PROJECT = """
import ctypes, datetime, os, signal, sys, time
from runsense_cli import (DefaultSensorStatus, Definitions, RunRequest, RunStatus, SkipReason,
                          job, op, run_status_sensor)

class Doom(BaseException):
    pass

@op
def work():
    return 1

@job
def watched_job():
    work()

@job
def target_job():
    work()

@run_status_sensor(run_status=RunStatus.SUCCESS, monitored_jobs=[watched_job],
                   default_status=DefaultSensorStatus.RUNNING)
def healthy(context):
    return None

@run_status_sensor(run_status=RunStatus.SUCCESS, monitored_jobs=[watched_job],
                   request_job=target_job, default_status=DefaultSensorStatus.RUNNING)
def launcher(context):
    return RunRequest(run_key=context.dagster_run.run_id)

SENSORS = [healthy, launcher]
{bad_sensors}
defs = Definitions(jobs=[watched_job, target_job], sensors=SENSORS)
"""

BAD_SENSOR = """
@run_status_sensor(run_status=RunStatus.SUCCESS, monitored_jobs=[watched_job], name="{name}",
                   request_job=target_job, default_status=DefaultSensorStatus.RUNNING,
                   max_retries=1,
                   retry_delay_seconds=0.2)
def bad_{name}(context):
    {body}
SENSORS.append(bad_{name})
"""

REACTIONS = (
    "SELECT r.state, r.attempts, r.error, r.run_id FROM reactions r"
    " JOIN sensors s ON s.id = r.sensor_id WHERE s.name = ? ORDER BY r.event_id"
)


def write_project(directory: Path, names: list[str], timeout: float = 1) -> Path:
    directory.mkdir(exist_ok=True)
    bad = "".join(BAD_SENSOR.format(name=name, body=CATALOGUE[name][0]) for name in names)
    path = directory / "contained_defs.py"
    path.write_text(PROJECT.format(bad_sensors=bad))
    # The settings file is found from the working directory, as a user's would be.
    (directory / "runsense.toml").write_text(f"sensor_timeout = {timeout}\n")
    return path


def run_cli(home: Path, path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return cli(home, path, *args, cwd=path.parent)


@pytest.mark.parametrize("name", sorted(CATALOGUE))
def test_sensor_tick_contains_a_misbehaving_sensor(home: Path, tmp_path: Path, name: str):
    """Given a sensor from the catalogue beside a healthy one and a run-requesting one,
    when `sensor tick` handles a finished run, twice,
    then the bad one's reaction fails with a message saying what the function did (no
    traceback from runsense, exit 1), is retried once and parked; the others react and the
    requested run succeeds."""
    path = write_project(tmp_path / "proj", [name])
    assert run_cli(home, path, "sensor", "list").returncode == 0  # registers: cursors start here
    ran = run_cli(home, path, "run", "watched_job")
    assert ran.returncode == 0, ran.stderr
    [(run_id,)] = query(home, "SELECT run_id FROM runs WHERE job_name = 'watched_job'")

    first = run_cli(home, path, "sensor", "tick")
    assert first.returncode == 1, first.stdout + first.stderr
    expected = CATALOGUE[name][1]
    shown = first.stdout.replace("\n", "")
    assert f"failed: run {run_id}" in shown and expected in shown, first.stdout
    assert "healthy: SUCCESS" in first.stdout and "launcher: SUCCESS" in first.stdout
    assert "target_job SUCCESS" in first.stdout
    assert "Traceback" not in first.stderr
    assert query(home, REACTIONS, "healthy")[0][:2] == ("SUCCESS", 1)

    if name in PERMANENT:
        [(state, attempts, error, _)] = query(home, REACTIONS, name)
        assert (state, attempts) == ("DEAD", 1) and expected in error
        return
    [(state, attempts, error, _)] = query(home, REACTIONS, name)
    assert (state, attempts) == ("RETRYING", 1) and expected in error
    time.sleep(0.25)  # retry_delay_seconds=0.2
    second = run_cli(home, path, "sensor", "tick", name)
    assert second.returncode == 1, second.stdout + second.stderr
    [(state, attempts, error, _)] = query(home, REACTIONS, name)
    assert (state, attempts) == ("DEAD", 2) and expected in error
    failures = run_cli(home, path, "sensor", "failures", name, "--json")
    [parked] = json.loads(failures.stdout)
    assert (parked["run_id"], parked["state"], parked["attempts"]) == (run_id, "DEAD", 2)
    # Parked, it is not called again as a new event either.
    third = run_cli(home, path, "sensor", "tick", name)
    assert third.returncode == 0, third.stdout
    assert [r[:2] for r in query(home, REACTIONS, name)] == [("DEAD", 2)]


def test_the_daemon_keeps_going_beside_every_misbehaving_sensor(home: Path, tmp_path: Path):
    """Given a daemon with every sensor of the catalogue beside a healthy and a run-requesting
    sensor, when three watched runs succeed, then the healthy sensors react to all three and the
    requested runs succeed, every bad reaction is retried once and parked with its message, and
    the daemon is alive at the end and stops cleanly."""
    names = sorted(CATALOGUE)
    path = write_project(tmp_path / "proj", names)
    log = tmp_path / "daemon.log"
    daemon = start_daemon(home, path, log, "--interval", "0.2", cwd=path.parent)
    try:
        wait_for_log(log, "daemon started")
        for _ in range(3):
            assert run_cli(home, path, "run", "watched_job").returncode == 0
        wait_until(lambda: len(query(home, REACTIONS, "healthy")) == 3, timeout=20)
        wait_until(
            lambda: (
                query(
                    home,
                    "SELECT count(*) FROM runs WHERE job_name = 'target_job' AND status = ?",
                    "SUCCESS",
                )
                == [(3,)]
            ),
            timeout=30,
        )

        def all_parked() -> bool:
            for name in names:
                want = 1 if name in PERMANENT else 2
                rows = query(home, REACTIONS, name)
                if len(rows) != 3 or any(r[:2] != ("DEAD", want) for r in rows):
                    return False
            return True

        wait_until(all_parked, timeout=90, what="every bad reaction parked")
        for name in names:
            assert all(CATALOGUE[name][1] in r[2] for r in query(home, REACTIONS, name)), name
        assert daemon.poll() is None, log.read_text()
        # Still reacting after all that.
        assert run_cli(home, path, "run", "watched_job").returncode == 0
        wait_until(lambda: len(query(home, REACTIONS, "healthy")) == 4, timeout=10)
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=10) == 0
    finally:
        stop(daemon)
    text = log.read_text()
    assert "Traceback" not in text.split("Fatal Python error")[0] or "faulthandler" in text


SLOW_PROJECT = """
import time
from runsense_cli import (DefaultSensorStatus, Definitions, RunRequest, RunStatus, job, op,
                          run_status_sensor)

@op
def work():
    return 1

@job
def watched_job():
    work()

@job
def target_job():
    work()

@run_status_sensor(run_status=RunStatus.SUCCESS, monitored_jobs=[watched_job],
                   default_status=DefaultSensorStatus.RUNNING)
def slow(context):
    time.sleep(30)  # a Slack Retry-After, say

@run_status_sensor(run_status=RunStatus.SUCCESS, monitored_jobs=[watched_job],
                   request_job=target_job, default_status=DefaultSensorStatus.RUNNING)
def quick(context):
    return RunRequest(run_key=context.dagster_run.run_id)

defs = Definitions(jobs=[watched_job, target_job], sensors=[slow, quick])
"""


def test_a_sleeping_sensor_delays_no_other_sensor_and_no_run_launch(home: Path, tmp_path: Path):
    """Given a daemon where one sensor sleeps 30 s per run, when watched runs succeed one after
    another, then the quick sensor reacts to each while the slow one is still asleep on the
    first, and the runs it requests launch and succeed meanwhile."""
    directory = tmp_path / "proj"
    directory.mkdir()
    path = directory / "slow_defs.py"
    path.write_text(SLOW_PROJECT)
    log = tmp_path / "daemon.log"
    daemon = start_daemon(home, path, log, cwd=directory)
    try:
        wait_for_log(log, "daemon started")
        started = time.monotonic()
        latencies = []
        for n in range(1, 4):
            assert run_cli(home, path, "run", "watched_job").returncode == 0
            [(ended,)] = query(
                home,
                "SELECT max(end_time) FROM runs WHERE job_name = 'watched_job'",
            )
            rows = wait_until(
                lambda n=n: (
                    len(query(home, REACTIONS, "quick")) == n
                    and query(
                        home,
                        "SELECT count(*) FROM runs WHERE job_name = 'target_job' AND status = ?",
                        "SUCCESS",
                    )
                    == [(n,)]
                ),
                timeout=10,
            )
            assert rows
            [(reacted,)] = query(
                home,
                "SELECT max(r.created_at) FROM reactions r JOIN sensors s ON s.id = r.sensor_id"
                " WHERE s.name = 'quick'",
            )
            latencies.append(reacted - ended)
        # All of it happened while the slow sensor was still in its first 30 s call.
        assert time.monotonic() - started < 25
        assert query(home, REACTIONS, "slow") == []
        print(f"quick sensor's reaction latency beside a sleeping one: {latencies}")
        assert daemon.poll() is None
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            assert daemon.wait(timeout=6) == 0, log.read_text()
        finally:
            stop(daemon)


OPS_PROJECT = """
import ctypes, os, sys
from runsense_cli import (DefaultSensorStatus, Definitions, RunRequest, RunStatus, job, op,
                          run_status_sensor)

class Doom(BaseException):
    pass

@op
def work():
    return 1

@op
def exits():
    sys.exit(0)

@op
def dooms():
    raise Doom("the end")

@op
def underscore_exit():
    os._exit(5)

@op
def segfault():
    ctypes.string_at(0)

@job
def watched_job():
    work()

@job
def exit_job():
    exits()

@job
def doom_job():
    dooms()

@job
def os_exit_job():
    underscore_exit()

@job
def segfault_job():
    segfault()

BAD_JOBS = [exit_job, doom_job, os_exit_job, segfault_job]

@run_status_sensor(run_status=RunStatus.SUCCESS, monitored_jobs=[watched_job],
                   request_jobs=BAD_JOBS, default_status=DefaultSensorStatus.RUNNING)
def request_bad_runs(context):
    return [RunRequest(job_name=j.name) for j in BAD_JOBS]

@run_status_sensor(run_status=RunStatus.FAILURE, default_status=DefaultSensorStatus.RUNNING)
def on_failure(context):
    return None

defs = Definitions(jobs=[watched_job, *BAD_JOBS], sensors=[request_bad_runs, on_failure])
"""

# job: what its FAILURE says
OP_CATALOGUE = {
    "exit_job": 'Step "exits" failed: SystemExit: 0',
    "doom_job": 'Step "dooms" failed: Doom: the end',
    "os_exit_job": "exited with code 5 before the run finished",
    "segfault_job": "was killed by SIGSEGV before the run finished",
}


def test_ops_that_exit_or_crash_fail_their_run_and_fire_failure_sensors(home: Path, tmp_path: Path):
    """Given run workers whose op raises SystemExit or a BaseException, calls os._exit or
    segfaults, when a sensor requests one run of each, then each run ends FAILURE saying what
    happened, `sensor tick` reports them, and the failure sensor reacts to every one; in the
    foreground, `runsense run` of the raising ones fails the run the same way."""
    directory = tmp_path / "proj"
    directory.mkdir()
    path = directory / "ops_defs.py"
    path.write_text(OPS_PROJECT)
    assert run_cli(home, path, "sensor", "list").returncode == 0
    assert run_cli(home, path, "run", "watched_job").returncode == 0
    ticked = run_cli(home, path, "sensor", "tick", "request_bad_runs")
    assert ticked.returncode == 1, ticked.stdout + ticked.stderr
    for job_name in OP_CATALOGUE:
        assert f"{job_name} FAILURE" in ticked.stdout, ticked.stdout
    failures = dict(
        query(
            home,
            "SELECT r.job_name, e.message FROM runs r JOIN events e ON e.run_id = r.run_id"
            " WHERE e.event_type = 'RUN_FAILURE'",
        )
    )
    for job_name, message in OP_CATALOGUE.items():
        assert message in failures[job_name], failures[job_name]
    assert run_cli(home, path, "sensor", "tick", "on_failure").returncode == 0
    assert len(query(home, REACTIONS, "on_failure")) == 4
    for job_name in ("exit_job", "doom_job"):
        ran = run_cli(home, path, "run", job_name)
        op_name = OP_CATALOGUE[job_name].split('"')[1]
        assert ran.returncode == 1, ran.stdout
        assert f"op '{op_name}' raised" in ran.stdout, ran.stdout
        assert "Traceback" not in ran.stderr
    assert query(home, "SELECT count(*) FROM runs WHERE status IN ('STARTED', 'STARTING')") == [
        (0,)
    ]


FORKING_PROJECT = """
import os
from runsense_cli import DefaultSensorStatus, Definitions, RunStatus, job, op, run_status_sensor

@op
def work():
    return 1

@job
def watched_job():
    work()

@run_status_sensor(run_status=RunStatus.SUCCESS, default_status=DefaultSensorStatus.RUNNING)
def forks(context):
    os.fork()  # and both processes return None
    return None

@run_status_sensor(run_status=RunStatus.SUCCESS, default_status=DefaultSensorStatus.RUNNING)
def plain(context):
    return None

defs = Definitions(jobs=[watched_job], sensors=[forks, plain])
"""


def test_a_sensor_function_that_forks_reacts_once(home: Path, tmp_path: Path):
    """Given a sensor whose function forks (both processes return), when runs succeed and the
    daemon reacts, then each run gets one reaction from it and one write-back, and the forked
    copy never serves another tick."""
    directory = tmp_path / "proj"
    directory.mkdir()
    path = directory / "forking_defs.py"
    path.write_text(FORKING_PROJECT)
    log = tmp_path / "daemon.log"
    daemon = start_daemon(home, path, log, "--interval", "0.1", cwd=directory)
    try:
        wait_for_log(log, "daemon started")
        for n in range(1, 4):
            assert run_cli(home, path, "run", "watched_job").returncode == 0
            wait_until(lambda n=n: len(query(home, REACTIONS, "forks")) == n, timeout=10)
            wait_until(lambda n=n: len(query(home, REACTIONS, "plain")) == n, timeout=10)
        time.sleep(0.5)
        assert [r[0] for r in query(home, REACTIONS, "forks")] == ["SUCCESS"] * 3
        written = query(
            home,
            "SELECT count(*) FROM events WHERE event_type = 'SENSOR_REACTION'"
            " AND message LIKE 'Sensor \"forks\"%'",
        )
        assert written == [(3,)]
        assert daemon.poll() is None
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            assert daemon.wait(timeout=6) == 0, log.read_text()
        finally:
            stop(daemon)


def test_idle_and_reloaded_tick_processes_end_and_are_not_piled_up(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Given two sensors, one ticked over and over while the other stays idle past the idle
    limit, then the code reloaded, the idle and the old tick processes end (no process or
    descriptor piles up) and ticks keep working."""
    from runsense_cli import tick_process
    from runsense_cli.evaluation import SensorEvaluator
    from runsense_cli.project import find_project, load_project
    from runsense_cli.storage import open_storage

    monkeypatch.setattr(tick_process, "IDLE_RETIRE_S", 0.3)
    directory = tmp_path / "proj"
    directory.mkdir()
    path = directory / "idle_defs.py"
    path.write_text(
        FORKING_PROJECT.replace("    os.fork()  # and both processes return None\n", "")
    )
    definitions = load_project(find_project(file=str(path)))
    storage = open_storage(home)
    evaluator = SensorEvaluator(storage, definitions, None)
    evaluator.register_sensors()
    supervisor = tick_process.TickSupervisor()
    try:
        ends = []
        supervisor.start(evaluator, definitions.sensors["forks"])
        supervisor.run_all(ends.append)
        idle_pid = supervisor.workers["forks"].pid
        for _ in range(12):  # `plain` keeps ticking; `forks` goes idle past the limit
            supervisor.start(evaluator, definitions.sensors["plain"])
            supervisor.run_all(ends.append)
            time.sleep(0.1)
        supervisor.collect()
        assert "forks" not in supervisor.workers and len(supervisor.retired) <= 1
        wait_until(lambda: (supervisor.collect(), not supervisor.retired)[1], timeout=5)
        assert not Path(f"/proc/{idle_pid}").exists()

        reloaded = SensorEvaluator(storage, load_project(find_project(file=str(path))), None)
        old_pid = supervisor.workers["plain"].pid
        supervisor.start(reloaded, reloaded.definitions.sensors["plain"])
        supervisor.run_all(ends.append)
        assert supervisor.workers["plain"].pid != old_pid
        wait_until(lambda: (supervisor.collect(), not supervisor.retired)[1], timeout=5)
        assert not Path(f"/proc/{old_pid}").exists()
        assert len(supervisor.fds()) == 2  # the one live tick process: results pipe + pidfd
        assert all(end.result is not None for end in ends), ends
    finally:
        supervisor.stop(2)
        storage.close()


def test_a_cursor_moved_back_replays_what_succeeded(home: Path, tmp_path: Path):
    """Given a sensor that reacted to a run, when its cursor is set back to 0, then the next
    tick reacts to that run again (what the user asked for), not "no new events"."""
    directory = tmp_path / "proj"
    directory.mkdir()
    path = directory / "rewind_defs.py"
    path.write_text(
        FORKING_PROJECT.replace("    os.fork()  # and both processes return None\n", "")
    )
    assert run_cli(home, path, "sensor", "list").returncode == 0
    assert run_cli(home, path, "run", "watched_job").returncode == 0
    assert "1 reaction(s)" in run_cli(home, path, "sensor", "tick", "plain").stdout
    moved = run_cli(home, path, "sensor", "cursor", "plain", "--set", "0")
    assert moved.returncode == 0, moved.stderr
    again = run_cli(home, path, "sensor", "tick", "plain")
    assert again.returncode == 0 and "1 reaction(s)" in again.stdout, again.stdout


def test_a_dead_tick_process_s_sensor_waits_for_its_parent_to_fail_the_call(
    home: Path, tmp_path: Path
):
    """Given a sensor function that ends its tick process (os._exit), then before the parent has
    failed that call, no other process can take the sensor over (it would call the event again
    as new); once the parent has, the lease is free and the event waits for its retry."""
    from runsense_cli import tick_process
    from runsense_cli.evaluation import SensorEvaluator
    from runsense_cli.identity import ProcessId
    from runsense_cli.project import find_project, load_project
    from runsense_cli.storage import open_storage

    path = write_project(tmp_path / "proj", ["os_exit_7"])
    definitions = load_project(find_project(file=str(path)))
    storage = open_storage(home)
    evaluator = SensorEvaluator(storage, definitions, None)
    evaluator.register_sensors()
    assert run_cli(home, path, "run", "watched_job").returncode == 0
    sensor = definitions.sensors["os_exit_7"]
    sensor_id = storage.sensor_state(evaluator.location, sensor.name).sensor_id
    other = open_storage(home)
    # Another live process on this host, as `runsense sensor tick` would be.
    bystander = subprocess.Popen(["sleep", "30"])
    supervisor = tick_process.TickSupervisor()
    try:
        supervisor.start(evaluator, sensor)
        pid = supervisor.workers[sensor.name].pid
        wait_until(lambda: not pid_running(pid), timeout=10)  # dead, not yet reaped by its parent
        holder = str(ProcessId.of(bystander.pid))
        assert not other.acquire_lease(sensor_id, "bystander", 15, holder)
        ends = []
        supervisor.run_all(ends.append)
        assert ends and ends[0].result is not None, ends
        assert other.acquire_lease(sensor_id, "bystander", 15, holder)
        [(state, attempts, error, _)] = query(home, REACTIONS, sensor.name)
        assert (state, attempts) == ("RETRYING", 1) and "exit code 7" in error
    finally:
        supervisor.stop(2)
        bystander.kill()
        bystander.wait()
        other.close()
        storage.close()
