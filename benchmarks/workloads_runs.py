"""Workloads of run workers under a real `runsense daemon`: how soon a requested run has run, and
how many trivial runs one daemon executes per second.

Each is measured with warm workers (forked from the daemon, the default) and, as supporting rows,
with cold ones (RUNSENSE_COLD_WORKERS=1: a fresh interpreter per run, as before warm workers).
"""

from __future__ import annotations

import json
import random
import time

from benchmarks.harness import FINISHED, Bench, Result, summary, wait_for

REQUESTED_SQL = (
    "SELECT e.timestamp, r.run_ids FROM reactions r JOIN sensors s ON s.id = r.sensor_id"
    " JOIN events e ON e.id = r.event_id WHERE s.name = 'request_on_success' AND e.id > ?"
    " ORDER BY e.id"
)
ENDED_SQL = (
    "SELECT run_id, timestamp FROM events WHERE event_type = 'RUN_SUCCESS'"
    " AND run_id IN (SELECT run_id FROM runs WHERE job_name = 'requested_job')"
)
REQUESTED_DONE = "SELECT count(*) FROM runs WHERE job_name = 'requested_job' AND status = 'SUCCESS'"
MODES = (("warm", {}), ("cold", {"RUNSENSE_COLD_WORKERS": "1"}))


def bench_requested_run_latency(b: Bench, backend: str) -> list[Result]:
    """Run end → the run a sensor requested for it is SUCCESS (a trivial one-op job).

    From the watched run's RUN_SUCCESS event to the requested run's RUN_SUCCESS (both stamped
    on this host's clock). One run at a time, the next 30–80 ms after the previous requested
    run succeeded, so nothing queues: each delay is a wake-up, a tick, a launch and a run.
    """
    results: list[Result] = []
    for mode, env in MODES:
        runs = (40 if b.quick else 200) if mode == "warm" else (15 if b.quick else 60)
        delays = _requested_delays(b, backend, mode, runs, env)
        stats = summary(delays, 1000)
        b.note(
            f"{backend}: run end → requested run SUCCESS, {mode} workers: p50 {stats['p50']:.1f}"
            f" ms, p95 {stats['p95']:.1f} ms, max {stats['max']:.0f} ms over {runs} runs"
        )
        if mode == "warm":
            workload = "daemon: run end → requested run SUCCESS (warm workers)"
            targets = (("p50", 150.0), ("p95", 150.0), ("p99", 150.0))
        else:
            workload = "  ↳ the same with cold workers (RUNSENSE_COLD_WORKERS=1)"
            targets = (("p95", 150.0),)
        for stat, target in targets:
            results.append(
                Result(
                    f"requested_run_latency_{mode}_{stat}",
                    workload,
                    f"{runs} runs",
                    stats[stat],
                    "ms",
                    target,
                    backend=backend,
                    statistic=stat,
                    spec="r2",
                    samples=runs,
                    role="target" if mode == "warm" and stat == "p95" else "info",
                    extra={**stats, "mode": mode, "moonshot_p95_ms": 25.0},
                )
            )
    return results


def _requested_delays(b: Bench, backend: str, mode: str, runs: int, env: dict) -> list[float]:
    db = b.db(backend, f"requested_{mode}")
    b.cli(db, "sensor", "start", "request_on_success")
    name = f"{backend}-requested-{mode}"
    daemon = b.daemon(db, name, **env)
    try:
        db.execute_in_process(b.module.one_op_job)  # a warm-up, not counted
        wait_for(lambda: db.query(REQUESTED_DONE)[0][0] >= 1, 30, "the first requested run")
        [(after,)] = db.query("SELECT max(id) FROM events")
        rng = random.Random(11)
        with db.active():
            for done in range(1, runs + 1):
                b.module.one_op_job.execute_in_process(home=str(db.home))
                wait_for(
                    lambda n=done: db.query(REQUESTED_DONE)[0][0] >= n + 1,
                    20,
                    f"requested run {done}",
                    poll=0.002,
                )
                if daemon.poll() is not None:
                    raise RuntimeError(f"the daemon exited: {b.daemon_log(name)}")
                time.sleep(rng.uniform(0.03, 0.08))
    finally:
        b.stop(daemon)
    ended = dict(db.query(ENDED_SQL))
    delays = []
    for started, run_ids in db.query(REQUESTED_SQL, (after,)):
        [run_id] = json.loads(run_ids)
        delays.append(ended[run_id] - started)
    if len(delays) != runs:
        raise RuntimeError(f"{len(delays)} requested runs for {runs} runs")
    return delays


def bench_run_throughput(b: Bench, backend: str) -> list[Result]:
    """Trivial queued runs executed end to end through one daemon, runs/s.

    N one-op runs are queued in bulk before the daemon starts; timed from the daemon's start
    (once it is up: its first heartbeat) until every run is SUCCESS, at max_concurrent_runs
    1, 2, 4 and 8."""
    results: list[Result] = []
    for mode, env in MODES:
        for slots in (1, 2, 4, 8):
            if mode == "cold" and slots not in (1, 4):
                continue
            count = (30 if b.quick else 200) if mode == "warm" else (12 if b.quick else 60)
            rate = _throughput(b, backend, mode, slots, count, env)
            target = slots == 4 and mode == "warm"
            label = (
                f"daemon: trivial queued runs end to end, max_concurrent_runs {slots}"
                if mode == "warm"
                else f"  ↳ cold workers, max_concurrent_runs {slots}"
            )
            results.append(
                Result(
                    f"run_throughput_{mode}_{slots}",
                    label,
                    f"{count} runs",
                    rate,
                    "runs/s",
                    20.0,
                    backend=backend,
                    statistic="mean",
                    better="higher",
                    spec="r2",
                    samples=count,
                    role="target" if target else "info",
                    extra={"mode": mode, "slots": slots, "moonshot_runs_per_s": 100.0},
                )
            )
    return results


def _throughput(b: Bench, backend: str, mode: str, slots: int, count: int, env: dict) -> float:
    from runsense_cli.project import find_project
    from runsense_cli.runs import RunStatus

    db = b.db(backend, f"throughput_{mode}_{slots}")
    origin = find_project(str(b.project)).to_origin()
    storage = db.open()
    try:
        location = b.module.defs.location
        for _ in range(count):
            storage.create_run("one_op_job", location, status=RunStatus.QUEUED, origin=origin)
    finally:
        storage.close()
    done = f"SELECT count(*) FROM runs WHERE status IN {FINISHED}"
    name = f"{backend}-throughput-{mode}-{slots}"
    started = time.time()
    daemon = b.daemon(db, name, "--max-concurrent-runs", str(slots), **env)
    try:
        wait_for(lambda: db.query("SELECT count(*) FROM daemons")[0][0] >= 1, 30, "the daemon")
        started = time.time()
        wait_for(lambda: db.query(done)[0][0] >= count, 300, f"{count} runs", poll=0.01)
    finally:
        b.stop(daemon)
    [(succeeded, first, last)] = db.query(
        "SELECT count(*), min(start_time), max(end_time) FROM runs WHERE status = 'SUCCESS'"
    )
    if succeeded != count:
        raise RuntimeError(f"{succeeded} of {count} runs succeeded: {b.daemon_log(name)}")
    return count / (last - min(started, first))
