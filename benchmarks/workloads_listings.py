"""Listings over a big history (SPEC §8 round 2): `sensor list` at a large lag and `runs list`
with filters at 10⁶ runs, each a `runsense` command from the shell, as a user types it.

The histories are clones built outside the timing (benchmarks/bulk.py). The first sample of each
command is the coldest (a new process, nothing of the database in its cache yet): it is kept in
the row's `extra` as `first`, and the table shows the median.
"""

from __future__ import annotations

import statistics

from benchmarks.bulk import clone_runs, template
from benchmarks.harness import Bench, Result, median_result, summary, timed

# Sensors started before the backlog arrives: the seed's (every location's SUCCESS events), one
# scoped to one job, and a failure sensor with nothing waiting.
STARTED = ("report_status_sensor", "on_success", "on_failure")

# `runs list` filters over 10⁶ one_op_job SUCCESS runs and 1,000 failing_job FAILURE runs: a
# common filter, rare ones, and combinations that match nothing (the worst case for an index
# that serves one filter and checks the other row by row).
FILTERS: dict[str, tuple[str, ...]] = {
    "none": (),
    "job_status": ("--job", "one_op_job", "--status", "SUCCESS"),
    "rare_status": ("--status", "FAILURE"),
    "rare_job": ("--job", "failing_job"),
    "job_rare_status": ("--job", "one_op_job", "--status", "FAILURE"),
    "rare_job_status": ("--job", "failing_job", "--status", "SUCCESS"),
}


def _size(count: int) -> str:
    return f"{count:,} events waiting"


def bench_sensor_list(b: Bench, backend: str) -> list[Result]:
    """≤ 0.3 s at any lag: 10⁶ status events waiting (2·10⁴ in --quick)."""
    count = 20_000 if b.quick else 1_000_000
    db = b.db(backend, "sensor_list")
    original = template(db, b.module.one_op_job)
    evaluator, sensor = b.started_sensor(db, STARTED[0])
    for name in STARTED[1:]:
        b.started_sensor(db, name)[0].storage.close()
    evaluator.storage.close()
    built = clone_runs(db, original, count)
    b.note(f"{backend}: sensor list: built {count:,} runs in {built:.1f} s")
    samples = [b.cli(db, "sensor", "list")[0] for _ in range(5 if b.quick else 9)]
    from runsense_cli.evaluation import SensorEvaluator

    storage = db.open()
    evaluator = SensorEvaluator(storage, b.module.defs)
    state = evaluator.state(sensor)  # the cursor the sensor was started at: nothing ticked
    lags = timed(lambda: evaluator.lag(sensor, state), 20, budget=5)
    storage.close()
    row = median_result(
        "sensor_list",
        "runsense sensor list, a sensor far behind",
        _size(count),
        samples,
        "s",
        0.3,
        backend=backend,
        spec="r2",
    )
    row.extra["first"] = samples[0]
    lag = Result(
        "sensor_lag",
        "  ↳ one sensor's waiting count (SensorEvaluator.lag)",
        _size(count),
        statistics.median(lags) * 1000,
        "ms",
        300.0,
        backend=backend,
        spec="r2",
        role="info",
        samples=len(lags),
        extra=summary(lags, 1000),
    )
    return [row, lag]


def bench_runs_list(b: Bench, backend: str) -> list[Result]:
    """≤ 0.2 s with any filters at 10⁶ runs (2·10⁴ in --quick): the slowest filter is the row."""
    count = 20_000 if b.quick else 1_000_000
    db = b.db(backend, "runs_list")
    common = template(db, b.module.one_op_job)
    rare = template(db, b.module.failing_job)
    built = clone_runs(db, common, count) + clone_runs(db, rare, 1000)
    b.note(f"{backend}: runs list: built {count + 1000:,} runs in {built:.1f} s")
    size = f"{count:,} runs"
    per_filter: dict[str, list[float]] = {}
    for name, args in FILTERS.items():
        per_filter[name] = [b.cli(db, "runs", "list", *args)[0] for _ in range(3 if b.quick else 7)]
    worst = max(per_filter, key=lambda name: statistics.median(per_filter[name]))
    row = median_result(
        "runs_list",
        f"runsense runs list, slowest filter ({' '.join(FILTERS[worst]) or 'none'})",
        size,
        per_filter[worst],
        "s",
        0.2,
        backend=backend,
        spec="r2",
    )
    row.extra["first"] = {name: samples[0] for name, samples in per_filter.items()}
    details = [
        median_result(
            f"runs_list_{name}",
            f"  ↳ runs list {' '.join(args) or '(no filter)'}",
            size,
            per_filter[name],
            "s",
            0.2,
            backend=backend,
            spec="r2",
            role="info",
        )
        for name, args in FILTERS.items()
    ]
    return [row, *details]
