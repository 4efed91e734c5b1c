"""One tick's rate over a big backlog (SPEC §8 round 2): reactions/s, cost per reaction, memory.

The tick runs in a fresh Python process (`python -m benchmarks.workloads_tick SPEC`), so its peak
memory is its own: the benchmark process has by then built and freed big databases, and a heap
with room to spare would hide what the tick needs. Peak RSS is reset just before the tick
(/proc/self/clear_refs), and the row reports how far it rose above the RSS at that moment.
"""

from __future__ import annotations

import contextlib
import gc
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.bulk import clone_runs, template
from benchmarks.harness import LOCATION, REPO, Bench, Db, Result, memory_mb

PAGE_SIZE = 1000  # the daemon's default --page-size

# kind → (sensor, job whose runs it reacts to, what the sensor returns)
KINDS = {
    "none": ("on_failure", "failing_job", "None"),
    "request": ("report_status_sensor", "one_op_job", "RunRequest"),
}


def bench_tick_rate(b: Bench, backend: str) -> list[Result]:
    """SQLite: 100k backlog (10k in --quick), ≥ 25k/s None, ≥ 15k/s RunRequest.
    PostgreSQL: 10k backlog, ≥ 5k/s either way. Memory ≤ 50 MB on both."""
    if backend == "sqlite":
        count = 10_000 if b.quick else 100_000
        floors = {"none": 25_000.0, "request": 15_000.0}
    else:
        count = 10_000
        floors = {"none": 5_000.0, "request": 5_000.0}
    results = []
    for kind, (sensor_name, job_name, returns) in KINDS.items():
        db = b.db(backend, f"tick_{kind}")
        original = template(db, getattr(b.module, job_name))
        evaluator, _ = b.started_sensor(db, sensor_name)
        evaluator.storage.close()
        clone_runs(db, original, count)
        spec = {"root": str(b.root), "home": str(db.home), "url": db.url, "sensor": sensor_name}
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks.workloads_tick", json.dumps(spec)],
            cwd=REPO,
            env=db.env(),
            capture_output=True,
            text=True,
            timeout=600,
        )
        if done.returncode != 0:
            raise RuntimeError(f"the tick process failed: {done.stderr[-2000:]}")
        measured = json.loads(done.stdout.strip().splitlines()[-1])
        [(reactions,)] = db.query("SELECT count(*) FROM reactions")
        if measured["reactions"] != count or reactions != count:
            raise RuntimeError(f"expected {count} reactions, found {reactions}")
        rate = count / measured["seconds"]
        per_reaction = measured["seconds"] / count * 1e6
        size = f"{count:,} events"
        extra = {**measured, "per_reaction_us": per_reaction}
        b.note(
            f"{backend}: one tick, {returns}, {size}: {per_reaction:.0f} µs per reaction,"
            f" memory +{measured['peak_mb']:.0f} MB, tick row {measured['tick_row_bytes']:,} bytes"
        )
        results += [
            Result(
                f"tick_rate_{kind}",
                f"one tick over a backlog, sensor returns {returns}",
                size,
                rate,
                "reactions/s",
                floors[kind],
                backend=backend,
                statistic="once",
                better="higher",
                spec="r2",
                extra=extra,
            ),
            Result(
                f"tick_cost_{kind}",
                "  ↳ per reaction",
                size,
                per_reaction,
                "µs",
                1e6 / floors[kind],
                backend=backend,
                statistic="mean",
                spec="r2",
                role="info",
                extra=extra,
            ),
            Result(
                f"tick_row_{kind}",
                "  ↳ the stored tick row",
                size,
                measured["tick_row_bytes"] / 1024,
                "KB",
                64.0,
                backend=backend,
                statistic="size",
                spec="r2",
                extra=extra,
            ),
            Result(
                f"tick_memory_{kind}",
                "  ↳ peak memory of the tick (RSS above its start)",
                size,
                measured["peak_mb"],
                "MB",
                50.0,
                backend=backend,
                statistic="peak",
                spec="r2",
                extra=extra,
            ),
        ]
        b.release()
    return results


def _tick(spec: dict[str, Any]) -> dict[str, Any]:
    """The child's side: one tick of `spec['sensor']`, measured (prints nothing itself)."""
    sys.path.insert(0, spec["root"])
    import bench_project  # type: ignore[import-not-found]

    from runsense_cli.evaluation import SensorEvaluator
    from runsense_cli.storage import open_storage

    definitions = bench_project.defs
    definitions.set_location(LOCATION)
    storage = open_storage(spec["home"], url=spec["url"])
    evaluator = SensorEvaluator(storage, definitions, page_size=PAGE_SIZE)
    sensor = definitions.get_sensor(spec["sensor"])
    evaluator.state(sensor)
    gc.collect()
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    before = memory_mb()["VmRSS"]
    started = time.perf_counter()
    result = evaluator.tick(sensor)
    seconds = time.perf_counter() - started
    peak = memory_mb()["VmHWM"]
    reactions = len(result.reactions)
    del result
    storage.close()
    db = Db("postgres" if spec["url"] else "sqlite", Path(spec["home"]), spec["url"])
    [(row_bytes,)] = db.query(  # the stored tick row's size (SPEC: ≤ 64 KB)
        "SELECT length(run_ids) + length(skip_reasons) + length(errors) + length(logs)"
        " FROM ticks ORDER BY id DESC LIMIT 1"
    )
    db.close()
    return {
        "seconds": seconds,
        "reactions": reactions,
        "rss_before_mb": before,
        "peak_mb": max(0.0, peak - before),
        "tick_row_bytes": int(row_bytes),
    }


if __name__ == "__main__":
    print(json.dumps(_tick(json.loads(sys.argv[1]))))
