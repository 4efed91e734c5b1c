"""A sensor whose scope leaves out every event behind its cursor (SPEC §8 round 2: "idle daemon
≤ 1 % CPU at 10^7 events whatever the sensors' scope; every per-pass check is O(1) in history").

`scoped_away` watches successes of a job that never succeeds; the home holds N successful runs of
another job, all after its cursor. The per-pass check (`SensorEvaluator.has_work`) is timed first
once (it may have to look at all N once), then as a daemon repeats it; then a real daemon with
every sensor running idles on that home (the scoped sensor's cursor put back behind all N).
RUNSENSE_BENCH_SCOPED_RUNS=10000000 sets N (default 10^6, 2·10^4 with --quick).
"""

from __future__ import annotations

import os
import statistics
import time

from benchmarks.bulk import clone_runs, template
from benchmarks.harness import Bench, Result, summary, timed
from benchmarks.workloads_daemon import idle_daemon


def bench_scoped_idle(b: Bench, backend: str) -> list[Result]:
    count = int(os.environ.get("RUNSENSE_BENCH_SCOPED_RUNS") or (20_000 if b.quick else 1_000_000))
    db = b.db(backend, f"scoped_{count}")
    original = template(db, b.module.one_op_job)
    built = clone_runs(db, original, count)
    b.note(f"{backend}: built {count:,} runs for the scoped sensor in {built:.1f} s")
    evaluator, sensor = b.started_sensor(db, "scoped_away")
    storage = evaluator.storage
    sensor_id = evaluator.state(sensor).sensor_id
    storage.set_cursor(sensor_id, 0)  # every success is behind it, none its own
    size = f"{count:,} runs behind it"

    started = time.perf_counter()
    evaluator.has_work(sensor, evaluator.state(sensor), time.time())
    first = time.perf_counter() - started

    def check() -> None:
        evaluator.has_work(sensor, evaluator.state(sensor), time.time())

    checks = timed(check, 200 if b.quick else 1000, budget=10, warmup=12)
    storage.set_cursor(sensor_id, 0)
    storage.close()

    b.cli(db, "sensor", "start", "--all")
    storage = db.open()
    storage.set_cursor(sensor_id, 0)  # `start --all` leaves a running sensor's cursor alone
    storage.close()
    window = 3.0 if b.quick else 30.0
    used, server_used, elapsed, _, memory = idle_daemon(b, db, f"{backend}-scoped", window)
    b.release()
    common = {"backend": backend, "spec": "r2"}
    results = [
        Result(
            "scoped_check",
            "per-pass check: scoped sensor, no event behind it in scope",
            size,
            statistics.median(checks) * 1000,
            "ms",
            5.0,
            samples=len(checks),
            extra={**summary(checks, 1000), "first_ms": first * 1000},
            **common,
        ),
        Result(
            "scoped_check_first",
            "  ↳ its first pass (reads the events behind it once)",
            size,
            first * 1000,
            "ms",
            5.0,
            statistic="once",
            role="info",
            **common,
        ),
        Result(
            "scoped_daemon_cpu",
            "daemon idle with that sensor: CPU, % of one core",
            f"{size}, {window:.0f} s",
            used / elapsed * 100,
            "%",
            1.0,
            statistic="mean",
            extra={"cpu_seconds": used, "window_s": elapsed, "rss_mb": memory["VmRSS"]},
            **common,
        ),
    ]
    if db.url:
        results.append(
            Result(
                "scoped_daemon_server_cpu",
                "  ↳ its PostgreSQL server processes, % of one core",
                f"{size}, {window:.0f} s",
                server_used / elapsed * 100,
                "%",
                1.0,
                statistic="mean",
                role="info",
                **common,
            )
        )
    return results
