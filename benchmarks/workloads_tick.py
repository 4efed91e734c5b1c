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
import os
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


def tick_sizes(b: Bench, backend: str) -> tuple[int, list[int]]:
    """The backlog the targets are read at, and every backlog measured (per-reaction cost must
    stay within 1.5x from the smallest to the largest). RUNSENSE_BENCH_TICK_SIZES=1000,1000000
    adds sizes (10^6 takes a few minutes to build and tick)."""
    if backend != "sqlite" or b.quick:
        headline, sizes = 10_000, [1_000, 10_000]
    else:
        headline, sizes = 100_000, [1_000, 10_000, 100_000]
    extra = os.environ.get("RUNSENSE_BENCH_TICK_SIZES", "")
    sizes += [int(x) for x in extra.replace("_", "").split(",") if x.strip()]
    return headline, sorted(set(sizes) | {headline})


def bench_tick_rate(b: Bench, backend: str) -> list[Result]:
    """SQLite: 100k backlog (10k in --quick), ≥ 25k/s None, ≥ 15k/s RunRequest.
    PostgreSQL: 10k backlog, ≥ 5k/s either way. Memory ≤ 50 MB on both, at every size."""
    if backend == "sqlite":
        floors = {"none": 25_000.0, "request": 15_000.0}
    else:
        floors = {"none": 5_000.0, "request": 5_000.0}
    headline, sizes = tick_sizes(b, backend)
    results = []
    for kind, (_, _, returns) in KINDS.items():
        costs: dict[int, float] = {}
        for count in sizes:
            measured = _measure(b, backend, kind, count)
            costs[count] = measured["per_reaction_us"]
            if count == headline:
                results += _headline_rows(backend, kind, returns, count, measured, floors[kind])
            else:
                results.append(
                    Result(
                        f"tick_cost_{kind}_{count}",
                        f"  ↳ per reaction (memory +{measured['peak_mb']:.0f}"
                        f" MB, row {measured['tick_row_bytes'] / 1024:.1f} KB)",
                        f"{count:,} events",
                        costs[count],
                        "µs",
                        1e6 / floors[kind],
                        backend=backend,
                        statistic="mean",
                        spec="r2",
                        role="info",
                        extra=measured,
                    )
                )
        smallest, largest = min(costs), max(costs)
        if largest > smallest:
            results.append(
                Result(
                    f"tick_growth_{kind}",
                    f"  ↳ per-reaction cost, {largest:,} vs {smallest:,} events ({returns})",
                    f"{smallest:,}→{largest:,}",
                    costs[largest] / costs[smallest],
                    "x",
                    1.5,
                    backend=backend,
                    statistic="ratio",
                    spec="r2",
                    extra={"per_reaction_us": costs},
                )
            )
    return results


def _measure(b: Bench, backend: str, kind: str, count: int) -> dict[str, Any]:
    """Build a backlog of `count` events for `kind`'s sensor, tick it once in a fresh process."""
    sensor_name, job_name, returns = KINDS[kind]
    db = b.db(backend, f"tick_{kind}_{count}")
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
        timeout=1800,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the tick process failed: {done.stderr[-2000:]}")
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    [(reactions,)] = db.query("SELECT count(*) FROM reactions")
    if measured["reactions"] != count or reactions != count:
        raise RuntimeError(f"expected {count} reactions, found {reactions}")
    measured["per_reaction_us"] = measured["seconds"] / count * 1e6
    b.note(
        f"{backend}: one tick, {returns}, {count:,} events: {measured['per_reaction_us']:.0f} µs"
        f" per reaction, memory +{measured['peak_mb']:.0f} MB, tick row"
        f" {measured['tick_row_bytes']:,} bytes"
    )
    b.release()
    return measured


def _headline_rows(
    backend: str, kind: str, returns: str, count: int, measured: dict[str, Any], floor: float
) -> list[Result]:
    size = f"{count:,} events"
    rate = count / measured["seconds"]
    common: dict[str, Any] = {"backend": backend, "spec": "r2", "extra": measured}
    return [
        Result(
            f"tick_rate_{kind}",
            f"one tick over a backlog, sensor returns {returns}",
            size,
            rate,
            "reactions/s",
            floor,
            statistic="once",
            better="higher",
            **common,
        ),
        Result(
            f"tick_cost_{kind}",
            "  ↳ per reaction",
            size,
            measured["per_reaction_us"],
            "µs",
            1e6 / floor,
            statistic="mean",
            role="info",
            **common,
        ),
        Result(
            f"tick_row_{kind}",
            "  ↳ the stored tick row",
            size,
            measured["tick_row_bytes"] / 1024,
            "KB",
            64.0,
            statistic="size",
            **common,
        ),
        Result(
            f"tick_memory_{kind}",
            "  ↳ peak memory of the tick (RSS above its start)",
            size,
            measured["peak_mb"],
            "MB",
            50.0,
            statistic="peak",
            **common,
        ),
    ]


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
    reactions = result.tick.reactions
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
