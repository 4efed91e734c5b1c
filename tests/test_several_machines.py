"""SPEC §9/§10 on PostgreSQL: three daemons on "three machines" (RUNSENSE_NODE) share one database
while random ones are killed with SIGKILL and the server restarts twice, during a drain of
1,000 events whose requested runs are executed. At the end: one reaction per event and sensor, one
requested run per event, and every requested run with one terminal event and at most one start.

Figures are printed (`pytest -rP`); replay a failure with RUNSENSE_TEST_SEED=<seed>.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from runsense_cli.project import find_project, load_project
from runsense_cli.storage import open_storage

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

PROJECT = """
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

@run_status_sensor(run_status=RunStatus.SUCCESS, monitored_jobs=[source_job], request_job=target_job,
                   default_status=DefaultSensorStatus.RUNNING)
def keyed(context):
    return RunRequest(run_key=context.dagster_run.run_id)

@run_status_sensor(run_status=RunStatus.SUCCESS, monitored_jobs=[source_job],
                   default_status=DefaultSensorStatus.RUNNING)
def quiet(context):
    return None

defs = Definitions(jobs=[source_job, target_job], sensors=[keyed, quiet])
"""

EVENTS = int(os.environ.get("RUNSENSE_TEST_EVENTS", "1000"))
MIN_KILLS = 20
NODES = ("node-a", "node-b", "node-c")


def start(node: str, path: Path, url: str, home: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "RUNSENSE_DATABASE_URL": url,
        "RUNSENSE_NODE": node,
        "RUNSENSE_HOME": str(home / node),
        "PYTHONUNBUFFERED": "1",
    }
    with open(log, "ab") as handle:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "runsense_cli",
                "-f",
                str(path),
                "daemon",
                "--page-size",
                "50",
                "--max-concurrent-runs",
                "3",
                "--interval",
                "0.2",
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def rows(url: str, sql: str) -> list[tuple]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(sql).fetchall()


def test_three_daemons_with_kills_and_server_restarts_lose_and_double_nothing(
    project, pg_url, pg_server, tmp_path, monkeypatch
):
    seed = int(os.environ.get("RUNSENSE_TEST_SEED") or random.randrange(1 << 32))
    rng = random.Random(seed)
    print(f"\nseveral-machines seed {seed} (replay: RUNSENSE_TEST_SEED={seed})")
    monkeypatch.setenv("RUNSENSE_DATABASE_URL", pg_url)
    path = project(PROJECT)
    definitions = load_project(find_project(file=str(path)))
    source_job = definitions.get_job("source_job")
    for _ in range(EVENTS):
        assert source_job.execute_in_process().success
    with open_storage(url=pg_url) as storage:
        # Sensors that start now would skip the backlog: start them at the first event.
        for name in ("keyed", "quiet"):
            state = storage.ensure_sensor(definitions.location, name, running=True)
            storage.set_cursor(state.sensor_id, 0)

    logs = {node: tmp_path / f"{node}.log" for node in NODES}
    daemons = {node: start(node, path, pg_url, tmp_path, logs[node]) for node in NODES}
    kills = restarts = 0
    restart_at = sorted(rng.uniform(2.0, 8.0) for _ in range(2))
    began = time.monotonic()

    def done() -> bool:
        [(reacted,)] = rows(pg_url, "SELECT count(*) FROM reactions")
        [(finished,)] = rows(
            pg_url,
            "SELECT count(*) FROM runs WHERE job_name = 'target_job'"
            " AND status IN ('SUCCESS', 'FAILURE', 'CANCELED')",
        )
        return reacted >= 2 * EVENTS and finished >= EVENTS

    try:
        while (kills < MIN_KILLS or restart_at) and time.monotonic() - began < 240:
            time.sleep(rng.uniform(0.1, 0.6))
            if restart_at and time.monotonic() - began >= restart_at[0]:
                restart_at.pop(0)
                pg_server.restart()
                restarts += 1
                continue
            node = rng.choice(NODES)
            daemons[node].send_signal(signal.SIGKILL)
            daemons[node].wait()
            kills += 1
            daemons[node] = start(node, path, pg_url, tmp_path, logs[node])
        deadline = time.monotonic() + 480  # cold workers: ~5 runs/s on 2 busy cores
        while not done() and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        for process in daemons.values():
            process.send_signal(signal.SIGTERM)
        for process in daemons.values():
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    reactions = rows(
        pg_url, "SELECT s.name, r.event_id FROM reactions r JOIN sensors s ON s.id = r.sensor_id"
    )
    per_sensor = Counter(name for name, _ in reactions)
    doubled = sum(n - 1 for n in Counter(reactions).values() if n > 1)
    requested = rows(
        pg_url,
        "SELECT parent_run_id, count(*) FROM runs WHERE job_name = 'target_job'"
        " GROUP BY parent_run_id",
    )
    starts = Counter(
        run_id
        for (run_id,) in rows(pg_url, "SELECT run_id FROM events WHERE event_type = 'RUN_START'")
    )
    terminal = Counter(
        run_id
        for (run_id,) in rows(
            pg_url,
            "SELECT run_id FROM events WHERE event_type IN ('RUN_SUCCESS', 'RUN_FAILURE',"
            " 'RUN_CANCELED')",
        )
    )
    targets = [r for (r,) in rows(pg_url, "SELECT run_id FROM runs WHERE job_name = 'target_job'")]
    outcome = Counter(
        s for (s,) in rows(pg_url, "SELECT status FROM runs WHERE job_name = 'target_job'")
    )
    print(
        f"several machines: {len(NODES)} daemons, {kills} kills, {restarts} server restarts,"
        f" {EVENTS} events x 2 sensors: {len(reactions)} reactions, {doubled} duplicates,"
        f" {2 * EVENTS - len(set(reactions))} lost; {len(targets)} requested runs"
        f" ({dict(outcome)}); took {time.monotonic() - began:.0f} s"
    )
    for (message,) in rows(
        pg_url,
        "SELECT e.message FROM events e JOIN runs r ON r.run_id = e.run_id"
        " WHERE r.job_name = 'target_job' AND e.event_type = 'RUN_FAILURE'",
    ):
        print(f"  failed: {message}")
    assert kills >= MIN_KILLS and restarts == 2
    assert per_sensor == {"keyed": EVENTS, "quiet": EVENTS} and doubled == 0
    assert len(requested) == EVENTS and all(n == 1 for _, n in requested)
    assert all(terminal[r] == 1 for r in targets), "a requested run without exactly one end"
    assert all(starts[r] <= 1 for r in targets), "a requested run started twice"
    succeeded = {
        r
        for (r,) in rows(
            pg_url, "SELECT run_id FROM runs WHERE status = 'SUCCESS' AND job_name = 'target_job'"
        )
    }
    assert all(starts[r] == 1 for r in succeeded)
