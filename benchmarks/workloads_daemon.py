"""Workloads with real `runsense daemon` processes: reaction latency with wake-ups, the idle
daemon's cost, and three daemons on one PostgreSQL database draining a backlog.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import statistics
import time
from pathlib import Path

from benchmarks.bulk import clone_runs, template
from benchmarks.harness import (
    FINISHED,
    Bench,
    Db,
    Result,
    cpu_seconds,
    memory_mb,
    percentile,
    summary,
    wait_for,
)

LATENCY_SQL = (
    "SELECT e.id, e.timestamp, r.created_at,"
    # The tick that made the reaction, to split the delay into "until the tick began" and "in it".
    " (SELECT t.started_at FROM ticks t WHERE t.sensor_id = r.sensor_id"
    "  AND t.cursor_before < e.id AND t.cursor_after >= e.id ORDER BY t.id LIMIT 1)"
    " FROM reactions r JOIN sensors s ON s.id = r.sensor_id JOIN events e ON e.id = r.event_id"
    " WHERE s.name = 'on_success' AND e.id > ? ORDER BY e.id"
)


def bench_reaction_latency(b: Bench, backend: str) -> list[Result]:
    """Run end → reaction stored, one run at a time, with the daemon at its default 0.5 s interval.

    From the RUN_SUCCESS event's timestamp to the reaction's `created_at` (both stamped just
    before their commits, on this host's clock). Runs start only once the previous reaction is
    stored (plus 30–80 ms), so nothing queues and each delay is one wake-up and one tick.
    """
    runs = 40 if b.quick else 200
    db = b.db(backend, "latency")
    job = b.module.one_op_job
    b.cli(db, "sensor", "start", "on_success")
    daemon = b.daemon(db, f"{backend}-latency")
    reacted = "SELECT count(*) FROM reactions"
    try:
        # A warm-up run, not counted: measure from the moment the daemon surely waits for changes.
        db.execute_in_process(job)
        wait_for(lambda: db.query(reacted)[0][0] >= 1, 30, "the daemon's first reaction")
        time.sleep(0.2)
        [(after,)] = db.query("SELECT max(id) FROM events")
        rng = random.Random(7)
        with db.active():
            for done in range(1, runs + 1):
                job.execute_in_process(home=str(db.home))
                time.sleep(rng.uniform(0.03, 0.08))
                wait_for(
                    lambda n=done: db.query(reacted)[0][0] >= n + 1,
                    10,
                    f"the reaction to run {done}",
                    poll=0.005,
                )
                if daemon.poll() is not None:
                    raise RuntimeError(f"the daemon exited: {b.daemon_log(f'{backend}-latency')}")
    finally:
        b.stop(daemon)
    rows = db.query(LATENCY_SQL, (after,))
    if len(rows) != runs:
        raise RuntimeError(f"{len(rows)} reactions for {runs} runs")
    delays = [created - ended for _, ended, created, _ in rows]
    stats = summary(delays, 1000)
    waits = [tick - ended for _, ended, _, tick in rows if tick is not None]
    work = [created - tick for _, _, created, tick in rows if tick is not None]
    if waits:
        stats["wait_p50"], stats["wait_p95"] = (
            statistics.median(waits) * 1000,
            percentile(waits, 95) * 1000,
        )
        stats["in_tick_p50"] = statistics.median(work) * 1000
        b.note(
            f"{backend}: run end → reaction: the tick began {stats['wait_p50']:.1f} ms (p50) /"
            f" {stats['wait_p95']:.1f} ms (p95) after the run ended; inside the tick"
            f" {stats['in_tick_p50']:.1f} ms (p50); max {stats['max']:.0f} ms,"
            f" {sum(d > 0.1 for d in delays)} of {runs} over 100 ms"
        )
    size = f"{runs} runs"
    workload = "daemon: run end → reaction stored (wake-ups)"
    return [
        Result(
            f"reaction_latency_{stat}",
            workload,
            size,
            stats[stat],
            "ms",
            target,
            backend=backend,
            statistic=stat,
            spec="r2",
            samples=runs,
            extra=stats,
        )
        for stat, target in (("p50", 25.0), ("p95", 50.0), ("p99", 100.0))
    ]


def bench_daemon_idle(b: Bench, backend: str) -> list[Result]:
    """CPU and memory of a daemon with every sensor running and nothing happening.

    On PostgreSQL the server processes serving the daemon's connections are measured too: their
    work is the daemon's per-pass queries, done on its behalf.
    """
    db = b.db(backend, "idle_daemon")
    b.cli(db, "sensor", "start", "--all")
    window = 3.0 if b.quick else 30.0
    used, server_used, elapsed, servers, memory = idle_daemon(b, db, f"{backend}-idle", window)
    size = f"all sensors, {window:.0f} s"
    results = [
        Result(
            "daemon_idle_rss",
            "daemon idle: resident memory (VmRSS)",
            size,
            memory["VmRSS"],
            "MB",
            30.0,
            backend=backend,
            statistic="at end",
            spec="r2",
            extra={"peak_mb": memory["VmHWM"]},
        ),
        Result(
            "daemon_idle_cpu",
            "daemon idle: CPU, % of one core",
            size,
            used / elapsed * 100,
            "%",
            1.0,
            backend=backend,
            statistic="mean",
            spec="r2",
            extra={"cpu_seconds": used, "window_s": elapsed},
        ),
    ]
    if db.url:
        results.append(
            Result(
                "daemon_idle_server_cpu",
                "  ↳ its PostgreSQL server processes, % of one core",
                size,
                server_used / elapsed * 100,
                "%",
                1.0,
                backend=backend,
                statistic="mean",
                spec="r2",
                role="info",
                extra={"server_processes": len(servers), "cpu_seconds": server_used},
            )
        )
    return results


def idle_daemon(
    b: Bench, db: Db, name: str, window: float
) -> tuple[float, float, float, list[int], dict[str, float]]:
    """Start a daemon on `db`, let it settle, then measure `window` seconds of it doing nothing:
    (its CPU seconds, its PostgreSQL servers' CPU seconds, elapsed, server pids, memory)."""
    daemon = b.daemon(db, name)
    try:
        time.sleep(2.0)  # start-up (imports, first pass) is not idle time
        if daemon.poll() is not None:
            raise RuntimeError(f"the daemon exited: {b.daemon_log(name)}")
        servers = _server_pids(db)
        before = cpu_seconds(daemon.pid), {pid: _cpu_or_zero(pid) for pid in servers}
        started = time.monotonic()
        time.sleep(window)
        elapsed = time.monotonic() - started
        used = cpu_seconds(daemon.pid) - before[0]
        server_used = sum(_cpu_or_zero(pid) - cpu for pid, cpu in before[1].items())
        memory = memory_mb(daemon.pid)
    finally:
        b.stop(daemon)
    return used, server_used, elapsed, servers, memory


def _server_pids(db: Db) -> list[int]:
    """The PostgreSQL backends connected to `db` other than the benchmark's own."""
    if not db.url:
        return []
    rows = db.query(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
        " AND pid <> pg_backend_pid()"
    )
    return [pid for (pid,) in rows]


def _cpu_or_zero(pid: int) -> float:
    try:
        return cpu_seconds(pid)
    except OSError:
        return 0.0


def bench_three_daemon_drain(b: Bench, backend: str) -> list[Result]:
    """Three daemons ("machines") on one PostgreSQL database; a run-requesting sensor with a
    backlog of N events; every requested run executed by the daemons' run workers.

    Timed from the moment the sensor is started (the daemons are up and idle). Reactions and
    finished runs are read from the database; when the runs take longer than the wait allowed,
    the time for all of them is extrapolated from the rate so far, and the row says so.
    """
    count = 1000 if b.quick else 10_000
    cap = b.drain_wait if b.drain_wait is not None else (10.0 if b.quick else 120.0)
    from runsense_cli.evaluation import SensorEvaluator
    from runsense_cli.records import SensorStatus

    db = b.db(backend, "drain")
    original = template(db, b.module.one_op_job)
    storage = db.open()
    state = SensorEvaluator(storage, b.module.defs).state(
        b.module.defs.get_sensor("request_on_success")
    )  # registered, and stopped (its default) until the daemons are up
    cursor = storage.newest_event_id()
    clone_runs(db, original, count)
    nodes = ("bench-node-a", "bench-node-b", "bench-node-c")
    daemons = [
        b.daemon(db, f"drain-{node}", RUNSENSE_NODE=node, RUNSENSE_HOME=str(db.home / node))
        for node in nodes
    ]
    finished_sql = (
        f"SELECT count(*), max(end_time) FROM runs WHERE job_name = 'requested_job'"
        f" AND status IN {FINISHED}"
    )
    try:
        wait_for(
            lambda: db.query("SELECT count(*) FROM daemons")[0][0] >= len(nodes),
            60,
            "three daemons to start",
        )
        started = time.time()
        storage.set_sensor_status(state.sensor_id, SensorStatus.RUNNING, cursor=cursor)
        # Stored means committed: seen from here (each reaction's created_at is stamped before
        # its page of up to 1,000 commits, which is a large part of a page's time on PostgreSQL).
        wait_for(
            lambda: db.query("SELECT count(*) FROM reactions")[0][0] >= count,
            120,
            f"{count:,} reactions",
            poll=0.02,
        )
        reactions_s = time.time() - started
        deadline = started + cap
        while time.time() < deadline and db.query(finished_sql)[0][0] < count:
            time.sleep(0.25)
        waited = time.time() - started
    finally:
        for process in daemons:
            process.send_signal(signal.SIGTERM)
        for process in daemons:
            b.stop(process)
        _wait_for_workers(db)
        storage.close()
    [(reactions,)] = db.query("SELECT count(*) FROM reactions")
    [(finished, last_end)] = db.query(finished_sql)
    [(succeeded,)] = db.query(
        "SELECT count(*) FROM runs WHERE job_name = 'requested_job' AND status = 'SUCCESS'"
    )
    if reactions != count:
        raise RuntimeError(f"{reactions} reactions for {count} events")
    # The rate over the runs' own span: from the sensor's start to the last run's end.
    runs_span = (last_end - started) if finished else waited
    rate = finished / runs_span if runs_span > 0 else 0.0
    complete = finished >= count
    runs_s = runs_span if complete else count / rate if rate else float("inf")
    extra = {
        "finished": finished,
        "succeeded": succeeded,
        "waited_s": waited,
        "extrapolated": not complete,
        "runs_per_s": rate,
    }
    if not complete:
        b.note(
            f"{backend}: three daemons: {finished:,} of {count:,} requested runs finished in"
            f" {waited:.0f} s ({rate:.1f} runs/s); the time for all is extrapolated at that rate"
        )
    size = f"{count:,} events, 3 daemons"
    return [
        Result(
            "drain_reactions",
            "3 daemons drain a run-requesting sensor: all reactions stored",
            size,
            reactions_s,
            "s",
            30.0,
            backend=backend,
            statistic="once",
            spec="r2",
            extra={"reactions_per_s": count / reactions_s},
        ),
        Result(
            "drain_runs",
            "  … and every requested run finished",
            size,
            runs_s,
            "s",
            30.0,
            backend=backend,
            statistic="once" if complete else "est.",
            spec="r2",
            extra=extra,
        ),
        Result(
            "drain_runs_per_s",
            "  ↳ requested runs finished per second",
            size,
            rate,
            "runs/s",
            count / 30.0,
            backend=backend,
            statistic="mean",
            better="higher",
            spec="r2",
            role="info",
            extra=extra,
        ),
    ]


def _wait_for_workers(db: Db, timeout: float = 30.0) -> None:
    """Run workers the stopped daemons had started finish their (trivial) runs on their own;
    one that does not within `timeout` is killed (it is ours: our daemons started it)."""
    in_flight = "SELECT run_id, worker_pid FROM runs WHERE status IN ('STARTING', 'STARTED')"
    with contextlib.suppress(RuntimeError):
        wait_for(lambda: not db.query(in_flight), timeout, "run workers to finish", poll=0.1)
    for _, pid in db.query(in_flight):
        with contextlib.suppress(OSError):
            if pid and b"runsense_cli" in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.kill(pid, signal.SIGKILL)
