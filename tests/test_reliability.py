"""SPEC §9 reliability with real processes: kill -9 during a drain, a raising sensor under the
daemon, eight concurrent `runsense run` processes.

The kill -9 test prints its figures (seed, kills, events checked, duplicates, lost); see them with
`pytest -rP tests/test_reliability.py`. Replay a failure with RUNSENSE_TEST_SEED=<seed>.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from runsense_cli.identity import ProcessId
from runsense_cli.project import find_project, load_project
from runsense_cli.runs import RunStatus
from runsense_cli.storage import open_storage
from tests.processes import (
    RUNSENSE,
    cli,
    env_for,
    kill_workers_in_progress,
    query,
    start_daemon,
    stop,
    wait_for_log,
    wait_until,
)

pytestmark = pytest.mark.slow

# -- 7. kill -9 while draining 1,000 events ----------------------------------------------------------

DRAIN_PROJECT = """
import time
from runsense_cli import DefaultSensorStatus, Definitions, RunRequest, RunStatus, job, op, run_status_sensor

@op
def step():
    return 1

@job
def source_job():
    step()

@job
def target_job():
    step()

def work():
    # 2 ms a call: 3 x 1,000 calls, 6 s of work, so the daemon is killed mid-page most times.
    time.sleep(0.002)

@run_status_sensor(run_status=RunStatus.SUCCESS, monitored_jobs=[source_job], request_job=target_job,
                   default_status=DefaultSensorStatus.RUNNING)
def keyed(context):
    work()
    return RunRequest(run_key=context.dagster_run.run_id)

@run_status_sensor(run_status=RunStatus.SUCCESS, monitored_jobs=[source_job], request_job=target_job,
                   default_status=DefaultSensorStatus.RUNNING)
def unkeyed(context):
    work()
    return RunRequest()

@run_status_sensor(run_status=RunStatus.SUCCESS, monitored_jobs=[source_job],
                   default_status=DefaultSensorStatus.RUNNING)
def quiet(context):
    work()
    return None

defs = Definitions(jobs=[source_job, target_job], sensors=[keyed, unkeyed, quiet])
"""

EVENTS = 1000
MIN_KILLS = 20
DAEMON_ARGS = ("--interval", "0.05", "--max-concurrent-runs", "1", "--page-size", "50")
SENSORS = ("keyed", "unkeyed", "quiet")
TOTAL = EVENTS * len(SENSORS)
REQUESTING = ("keyed", "unkeyed")


def test_kill_9_at_random_moments_during_a_drain_loses_and_doubles_nothing(
    home: Path, project, tmp_path: Path
):
    """Given 1,000 finished runs waiting for three sensors (one requests a run with a run_key,
    one without, one returns None), the daemon draining them in pages of 50,
    when the daemon is killed with SIGKILL at ≥ 20 random moments (some during its start-up,
    the rest at random points of its work, scaled so the kills spread over all three sensors'
    drains) and restarted each time, then left to finish,
    then each sensor has exactly one reaction per event (and its ticks count each once), each
    requesting sensor created exactly one run per monitored run, every requested run exists with
    one RUN_ENQUEUED event, and the None sensor wrote exactly one event back per run."""
    seed = int(os.environ.get("RUNSENSE_TEST_SEED") or random.randrange(1 << 32))
    rng = random.Random(seed)
    print(f"\nreliability seed {seed} (replay: RUNSENSE_TEST_SEED={seed})")
    path = project(DRAIN_PROJECT)
    assert cli(home, path, "sensor", "list").returncode == 0  # the three sensors start now

    definitions = load_project(find_project(file=str(path)))
    location = definitions.location
    # A run of this (live) process holds the one run slot (--max-concurrent-runs 1), so requested
    # runs stay QUEUED: this test is about reactions and requested runs, not 2,000 run workers.
    storage = open_storage(home)
    blocker = storage.create_run(
        "target_job", location, status=RunStatus.STARTING, worker=str(ProcessId.of(os.getpid()))
    )
    storage.set_run_status(blocker, RunStatus.STARTED)
    storage.close()
    source_job = definitions.get_job("source_job")
    for _ in range(EVENTS):
        assert source_job.execute_in_process(home=str(home)).success

    log = tmp_path / "daemon.log"
    kills = in_startup = 0
    mid_drain = dict.fromkeys(SENSORS, 0)  # kills while this sensor's drain was under way
    killed_mid_drain = 0  # kills while any drain was under way (the sensors drain side by side)
    ticking = 0.0  # how long the killed daemons had been up, after their start-up
    began = time.monotonic()
    while killed_mid_drain < MIN_KILLS and kills < 2 * MIN_KILLS:
        # Random moments, scaled so that the kills spread over the whole drain (all three
        # sensors) whatever the machine's speed: each life aims at an equal share of what is left.
        stored, _ = _progress(home)
        rate = stored / ticking if ticking > 0.5 and stored else 250.0
        share = (TOTAL - stored) / (MIN_KILLS - killed_mid_drain + 1)
        started_before = log.read_text().count("daemon started") if log.exists() else 0
        daemon = start_daemon(home, path, log, *DAEMON_ARGS)
        up = None
        try:
            if rng.random() < 0.15:
                time.sleep(rng.uniform(0.0, 0.3))  # while it imports, loads, registers
            else:
                wait_for_log(log, "daemon started", count=started_before + 1)
                up = time.monotonic()
                # Below one share on average: the tick processes drain side by side and fast,
                # and each life should end mid-drain with room to spare.
                time.sleep(min(2.0, rng.uniform(0.25, 1.0) * share / rate))
            _, active = _progress(home)
            in_startup += log.read_text().count("daemon started") == started_before
        finally:
            daemon.send_signal(signal.SIGKILL)
            daemon.wait()
            if up is not None:
                ticking += time.monotonic() - up
        assert daemon.returncode == -signal.SIGKILL, "the daemon died before it was killed"
        kills += 1
        killed_mid_drain += bool(active)
        for name in active:
            mid_drain[name] += 1
    killing = time.monotonic() - began
    drained_by_kills, _ = _progress(home)

    started_before = log.read_text().count("daemon started")
    daemon = start_daemon(home, path, log, *DAEMON_ARGS)
    try:
        # Until it has started, a SIGTERM is Python's default action, not the daemon's stop.
        wait_for_log(log, "daemon started", count=started_before + 1)
        wait_until(lambda: _lag(home) == 0, timeout=120, every=0.2, what="the drain to finish")
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=5) == 0
    finally:
        stop(daemon)
    text = log.read_text()
    assert "Traceback" not in text and "locked" not in text

    sources = dict(
        query(
            home,
            "SELECT run_id, id FROM events WHERE event_type = 'RUN_SUCCESS' AND job_name = ?",
            "source_job",
        )
    )
    assert len(sources) == EVENTS
    duplicates, lost, checked, odd = _audit(home, sources, blocker.run_id)
    print(
        f"kills: {kills} over {killing:.1f}s ({in_startup} during start-up; mid-drain by sensor:"
        f" {', '.join(f'{name} {n}' for name, n in mid_drain.items())}); reactions stored before"
        f" the last restart: {drained_by_kills} of {TOTAL}; events checked: {len(sources)} x"
        f" {len(SENSORS)} sensors ({checked} reactions); duplicates: {duplicates}; lost: {lost}"
    )
    assert killed_mid_drain >= MIN_KILLS, f"only {killed_mid_drain} of {kills} kills mid-drain"
    assert all(mid_drain.values()), f"some sensor's drain was never interrupted: {mid_drain}"
    assert (duplicates, lost, odd) == (0, 0, [])


def _audit(home: Path, sources: dict[str, int], blocker: str) -> tuple[int, int, int, list[str]]:
    """Duplicates, losses, reactions checked, and anything else out of place, over the three
    sensors: reactions per event, reactions counted by ticks, requested runs per monitored run,
    requested runs and the reactions naming them, RUN_ENQUEUED events, run_keys, write-backs."""
    duplicates = lost = checked = 0
    odd: list[str] = []

    def tally(counts: dict, expected: set, what: str) -> None:
        nonlocal duplicates, lost
        duplicates += sum(n - 1 for n in counts.values() if n > 1)
        lost += len(expected - set(counts))
        if set(counts) - expected:
            odd.append(f"{what} for unexpected keys: {sorted(set(counts) - expected)[:3]}")

    for sensor in SENSORS:
        rows = query(
            home,
            "SELECT r.event_id, r.run_id, r.state, r.run_ids FROM reactions r"
            " JOIN sensors s ON s.id = r.sensor_id WHERE s.name = ?",
            sensor,
        )
        checked += len(rows)
        tally(Counter(event_id for event_id, *_ in rows), set(sources.values()), "reactions")
        odd += [
            f"{sensor}: reaction {e} is {state}" for e, _, state, _ in rows if state != "SUCCESS"
        ]
        # Ticks are committed with their pages: an abandoned page's tick never counts.
        [(ticked,)] = query(
            home,
            "SELECT coalesce(sum(t.reactions), 0) FROM ticks t JOIN sensors s"
            " ON s.id = t.sensor_id WHERE s.name = ?",
            sensor,
        )
        duplicates += max(0, ticked - EVENTS)
        lost += max(0, EVENTS - ticked)
        requested = dict(
            query(
                home,
                "SELECT run_id, parent_run_id FROM runs"
                " WHERE json_extract(tags, '$.\"runsense/sensor\"') = ?",
                sensor,
            )
        )
        if sensor not in REQUESTING:
            duplicates += len(requested)
            continue
        per_parent = Counter(requested.values())
        tally(per_parent, set(sources), "requested runs")
        # every run a reaction names exists; a requested run no reaction names is a duplicate
        # (already counted above, as its monitored run's second run)
        named = Counter(run for *_, run_ids in rows for run in json.loads(run_ids))
        duplicates += sum(n - 1 for n in named.values() if n > 1)
        lost += len(set(named) - set(requested))
        orphans = len(set(requested) - set(named))
        if orphans != sum(n - 1 for n in per_parent.values()):
            odd.append(f"{sensor}: {orphans} requested runs that no reaction names")
    enqueued = query(
        home,
        "SELECT r.status, count(e.id) FROM runs r LEFT JOIN events e ON e.run_id = r.run_id"
        " AND e.event_type = 'RUN_ENQUEUED' WHERE r.job_name = 'target_job' AND r.run_id != ?"
        " GROUP BY r.run_id",
        blocker,
    )
    if {row for row in enqueued} - {("QUEUED", 1)}:
        odd.append(f"requested runs not QUEUED with one RUN_ENQUEUED: {Counter(enqueued)}")
    keys = dict(
        query(
            home,
            "SELECT k.run_key, r.parent_run_id FROM run_keys k JOIN sensors s"
            " ON s.id = k.sensor_id LEFT JOIN runs r ON r.run_id = k.run_id WHERE s.name = 'keyed'",
        )
    )
    lost += len(set(sources) - set(keys))
    odd += [f"run_key {k} names a run of {p}" for k, p in keys.items() if k != p]
    written_back = dict(
        query(
            home,
            "SELECT run_id, count(*) FROM events WHERE event_type = 'SENSOR_REACTION'"
            " AND message LIKE 'Sensor \"quiet\" acted on%' GROUP BY run_id",
        )
    )
    tally(written_back, set(sources), "write-backs")
    return duplicates, lost, checked, odd


def _lag(home: Path) -> int:
    """Status events the slowest sensor has still to consume."""
    [(newest,)] = query(
        home,
        "SELECT max(id) FROM events WHERE event_type = 'RUN_SUCCESS' AND job_name = ?",
        "source_job",
    )
    [(slowest,)] = query(home, "SELECT min(cursor) FROM sensors")
    return max(0, newest - slowest)


def _progress(home: Path) -> tuple[int, list[str]]:
    """Reactions stored so far, and the sensors whose drain is under way (the daemon ticks them
    side by side, each in its own process); none when all are done."""
    [(stored,)] = query(home, "SELECT count(*) FROM reactions")
    [(newest,)] = query(
        home,
        "SELECT max(id) FROM events WHERE event_type = 'RUN_SUCCESS' AND job_name = ?",
        "source_job",
    )
    cursors = dict(query(home, "SELECT name, cursor FROM sensors"))
    return stored, [name for name in SENSORS if cursors[name] < newest]


# -- 6. a sensor that raises ------------------------------------------------------------------------

RAISING_PROJECT = """
import os
from runsense_cli import DefaultSensorStatus, Definitions, RunStatus, job, op, run_failure_sensor

FIXED = {fixed!r}

@op
def fail():
    raise RuntimeError("job broke")

@job
def failing_job():
    fail()

@run_failure_sensor(default_status=DefaultSensorStatus.RUNNING, max_retries=2,
                    retry_delay_seconds=0.2)
def flaky_alert(context):
    if not os.path.exists(FIXED):
        raise ConnectionError("alerting service down")

@run_failure_sensor(default_status=DefaultSensorStatus.RUNNING)
def steady(context):
    return None

defs = Definitions(jobs=[failing_job], sensors=[flaky_alert, steady])
"""

REACTIONS = (
    "SELECT r.run_id, r.state, r.attempts, r.created_at, r.error FROM reactions r"
    " JOIN sensors s ON s.id = r.sensor_id WHERE s.name = ? ORDER BY r.event_id"
)
FAILED_TICKS = (
    "SELECT t.started_at FROM ticks t JOIN sensors s ON s.id = t.sensor_id"
    " WHERE s.name = 'flaky_alert' AND t.status = 'FAILURE' ORDER BY t.id"
)


def test_a_raising_sensor_is_retried_on_schedule_parked_and_brought_back(
    home: Path, project, tmp_path: Path
):
    """Given a daemon with a failure sensor that raises (max_retries=2, retry_delay_seconds=0.2)
    and one that works,
    when runs fail,
    then the working sensor reacts at once each time; the raising one is retried 0.2 s and then
    0.4 s later and parked DEAD after 3 attempts, while its cursor moves on to the next run;
    `sensor retry --event` brings a reaction back (it fails again and is parked again), and once
    the sensor is fixed `sensor retry --all` makes every parked reaction succeed."""
    fixed = tmp_path / "fixed"
    path = project(RAISING_PROJECT.format(fixed=str(fixed)))
    log = tmp_path / "daemon.log"
    daemon = start_daemon(home, path, log, "--interval", "0.05")
    try:
        wait_for_log(log, "daemon started")
        assert cli(home, path, "run", "failing_job").returncode == 1
        [(run1, ended)] = query(
            home, "SELECT run_id, end_time FROM runs WHERE job_name = 'failing_job'"
        )
        [(_, state, _, reacted, _)] = wait_until(lambda: query(home, REACTIONS, "steady"))
        assert state == "SUCCESS" and reacted - ended < 1.0
        wait_until(
            lambda: [r[1:3] for r in query(home, REACTIONS, "flaky_alert")] == [("DEAD", 3)],
            timeout=10,
        )
        [(_, _, _, _, error)] = query(home, REACTIONS, "flaky_alert")
        assert "ConnectionError: alerting service down" in error
        wait_for_log(log, f"parked: flaky_alert on run {run1}")  # the daemon says so, once
        # on schedule: 0.2 s, then 0.4 s (doubling) between the three attempts
        first, second, third = [t for (t,) in query(home, FAILED_TICKS)]
        assert 0.2 <= second - first < 1.2, second - first
        assert 0.4 <= third - second < 1.4, third - second

        # parked, it blocks nothing: the next failed run gets both sensors' attention at once
        assert cli(home, path, "run", "failing_job").returncode == 1
        [(run2,)] = query(
            home, "SELECT run_id FROM runs WHERE job_name = 'failing_job' AND run_id != ?", run1
        )
        wait_until(lambda: len(query(home, REACTIONS, "steady")) == 2, timeout=2)
        wait_until(
            lambda: (
                [r[:3] for r in query(home, REACTIONS, "flaky_alert")]
                == [(run1, "DEAD", 3), (run2, "DEAD", 3)]
            ),
            timeout=10,
        )
        listed = cli(home, path, "sensor", "failures", "flaky_alert", "--json")
        assert listed.returncode == 0, listed.stderr
        failures = json.loads(listed.stdout)
        assert [(f["run_id"], f["state"], f["attempts"]) for f in failures] == [
            (run1, "DEAD", 3),
            (run2, "DEAD", 3),
        ]

        # retried while still broken: it comes back with a fresh budget, then is parked again
        ticks_before = len(query(home, FAILED_TICKS))
        event1 = failures[0]["event_id"]
        retried = cli(home, path, "sensor", "retry", "flaky_alert", "--event", str(event1))
        assert retried.returncode == 0, retried.stderr
        wait_until(lambda: len(query(home, FAILED_TICKS)) == ticks_before + 3, timeout=10)
        assert [r[1:3] for r in query(home, REACTIONS, "flaky_alert")] == [
            ("DEAD", 3),
            ("DEAD", 3),
        ]

        # fixed, then retried: every parked reaction succeeds, once
        fixed.touch()
        retried = cli(home, path, "sensor", "retry", "flaky_alert", "--all")
        assert retried.returncode == 0, retried.stderr
        assert "Queued 2 reaction(s)" in retried.stdout
        wait_until(
            lambda: (
                [r[:3] for r in query(home, REACTIONS, "flaky_alert")]
                == [(run1, "SUCCESS", 1), (run2, "SUCCESS", 1)]
            ),
            timeout=10,
        )
        assert json.loads(cli(home, path, "sensor", "failures", "--json").stdout) == []
        written_back = query(
            home,
            "SELECT run_id FROM events WHERE event_type = 'SENSOR_REACTION'"
            " AND message LIKE 'Sensor \"flaky_alert\" acted on run status FAILURE%'"
            " ORDER BY id",
        )
        assert written_back == [(run1,), (run2,)]
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=5) == 0
    finally:
        stop(daemon)
    assert "Traceback" not in log.read_text()


# -- 8. eight concurrent `runsense run` processes ----------------------------------------------------

CONCURRENT_PROJECT = """
from runsense_cli import DefaultSensorStatus, Definitions, RunRequest, RunStatus, job, op, run_status_sensor

@op
def chatty(context):
    for n in range(5):
        context.log.info("line %d", n)
    return 1

@op
def add_one(x):
    return x + 1

@job
def two_ops():
    add_one(chatty())

@op
def tiny():
    return 0

@job
def follow_job():
    tiny()

@run_status_sensor(run_status=RunStatus.SUCCESS, monitored_jobs=[two_ops],
                   default_status=DefaultSensorStatus.RUNNING)
def count_successes(context):
    return None

@run_status_sensor(run_status=RunStatus.SUCCESS, monitored_jobs=[two_ops], request_job=follow_job,
                   default_status=DefaultSensorStatus.RUNNING)
def follow(context):
    return RunRequest(run_key=context.dagster_run.run_id)

defs = Definitions(jobs=[two_ops, follow_job], sensors=[count_successes, follow])
"""

TWO_OPS_EVENTS = (
    "RUN_STARTING RUN_START STEP_START LOG LOG LOG LOG LOG STEP_SUCCESS STEP_START STEP_SUCCESS"
    " RUN_SUCCESS"
)
FOLLOW_EVENTS = "RUN_ENQUEUED RUN_STARTING RUN_START STEP_START STEP_SUCCESS RUN_SUCCESS"


def test_eight_concurrent_runs_while_the_daemon_ticks_and_launches(
    home: Path, project, tmp_path: Path
):
    """Given a daemon whose sensors react to every run of `two_ops` (one writes back, one
    requests a follow-up run that a run worker executes),
    when eight `runsense run two_ops` processes start at once, three times over,
    then all 24 exit 0, no output (theirs, the daemon's, the workers') mentions a locked
    database, and every run is stored SUCCESS with its full event sequence: the 24 runs, and
    the 24 follow-up runs the daemon's workers ran meanwhile."""
    path = project(CONCURRENT_PROJECT)
    log = tmp_path / "daemon.log"
    daemon = start_daemon(home, path, log, "--interval", "0.05")
    outputs: list[str] = []
    try:
        wait_for_log(log, "daemon started")
        for _ in range(3):
            runs = [
                subprocess.Popen(
                    [*RUNSENSE, "-f", str(path), "run", "two_ops"],
                    env=env_for(home),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                for _ in range(8)
            ]
            results = [run.communicate(timeout=60) for run in runs]
            outputs += [out + err for out, err in results]
            assert [run.returncode for run in runs] == [0] * 8, results
        wait_until(
            lambda: (
                query(
                    home,
                    "SELECT count(*) FROM runs WHERE job_name = 'follow_job' AND status = ?",
                    "SUCCESS",
                )
                == [(24,)]
            ),
            timeout=30,
            what="24 follow-up runs SUCCESS",
        )
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=5) == 0
    finally:
        stop(daemon)
        kill_workers_in_progress(home)
    outputs.append(log.read_text())
    outputs += [p.read_text() for p in (home / "logs").glob("*.log")]
    assert not [o for o in outputs if "locked" in o.lower() or "Traceback" in o]

    statuses = query(home, "SELECT job_name, status, count(*) FROM runs GROUP BY 1, 2")
    assert sorted(statuses) == [("follow_job", "SUCCESS", 24), ("two_ops", "SUCCESS", 24)]
    sequences = query(
        home,
        "SELECT job_name, group_concat(event_type, ' ') FROM (SELECT run_id, job_name, event_type"
        " FROM events WHERE event_type != 'SENSOR_REACTION' ORDER BY id) GROUP BY run_id",
    )
    assert sorted({(job, seq) for job, seq in sequences}) == [
        ("follow_job", FOLLOW_EVENTS),
        ("two_ops", TWO_OPS_EVENTS),
    ]
    assert len(sequences) == 48
    reactions = query(
        home,
        "SELECT s.name, count(DISTINCT r.run_id), count(*) FROM reactions r"
        " JOIN sensors s ON s.id = r.sensor_id GROUP BY s.name ORDER BY s.name",
    )
    assert reactions == [("count_successes", 24, 24), ("follow", 24, 24)]
