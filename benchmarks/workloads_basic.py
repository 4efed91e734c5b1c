"""Round-1 workloads (SPEC §8): start-up, one run, backlogs in one tick, and a tick with nothing new.

Each takes the bench and a backend ("sqlite" or "postgres"; the start-up ones need no database)
and returns its table rows.
"""

from __future__ import annotations

import re
import statistics
import subprocess
import time

from benchmarks.bulk import clone_runs, template
from benchmarks.harness import FINISHED, Bench, Db, Result, median_result, summary, timed, wait_for


def bench_help(b: Bench, backend: str) -> list[Result]:
    db = Db("sqlite", b.home("help"))  # --help opens no database
    samples = []
    for _ in range(5 if b.quick else 11):
        started = time.perf_counter()
        subprocess.run([*b.runsense, "--help"], env=db.env(), capture_output=True, check=True)
        samples.append(time.perf_counter() - started)
    return [median_result("help", "runsense --help (cold start)", "-", samples, "s", 0.13)]


def bench_run_shell(b: Bench, backend: str) -> list[Result]:
    db = Db("sqlite", b.home("run_shell"))
    b.cli(db, "run", "one_op_job", project=b.tiny)  # the database exists before timing
    samples = [
        b.cli(db, "run", "one_op_job", project=b.tiny)[0] for _ in range(5 if b.quick else 11)
    ]
    return [
        median_result(
            "run_shell",
            "runsense run, one-op job, from the shell (SQLite)",
            "-",
            samples,
            "s",
            0.12,
            spec="r2",
        )
    ]


def bench_in_process(b: Bench, backend: str) -> list[Result]:
    db = b.db(backend, "in_process")
    job = b.module.one_op_job
    with db.active():
        job.execute_in_process(home=str(db.home))  # opens the connection this process keeps
        samples = timed(
            lambda: job.execute_in_process(home=str(db.home)),
            200 if b.quick else 1000,
            budget=3 if b.quick else 20,
        )
    return [
        median_result(
            "in_process",
            "one-op run in process, with storage",
            "-",
            samples,
            "ms",
            3.0,
            backend=backend,
            scale=1000,
        )
    ]


def bench_seed_backlog(b: Bench, backend: str) -> list[Result]:
    """The target is one `runsense sensor tick --no-wait` subprocess; in process is for context."""
    count = 1000
    attempts = 1 if b.quick else 5
    samples: dict[str, list[float]] = {"cli": [], "lib": []}
    for attempt in range(attempts):
        for kind in samples:
            db = b.db(backend, f"seed_{kind}_{attempt}")
            original = template(db, b.module.one_op_job)
            evaluator, sensor = b.started_sensor(db, "report_status_sensor")
            clone_runs(db, original, count)
            if kind == "cli":
                elapsed, out = b.cli(db, "sensor", "tick", "report_status_sensor", "--no-wait")
                samples["cli"].append(elapsed)
                # --no-wait still starts up to 4 run workers: let them finish before timing more.
                launched = int(m.group(1)) if (m := re.search(r"Launched (\d+)", out)) else 0
                wait_for(
                    lambda d=db, n=launched: (
                        d.query(
                            "SELECT count(*) FROM runs WHERE job_name = 'status_reporting_job'"
                            f" AND status IN {FINISHED}"
                        )[0][0]
                        >= n
                    ),
                    60,
                    "the run workers `sensor tick --no-wait` launched",
                )
            else:
                samples["lib"] += timed(lambda e=evaluator, s=sensor: e.tick(s), 1)
            [(made, reactions)] = db.query(
                "SELECT (SELECT count(*) FROM runs WHERE job_name = 'status_reporting_job'),"
                " (SELECT count(*) FROM reactions)"
            )
            if made != count or reactions != count:
                raise RuntimeError(f"expected {count} runs and reactions, found {made}/{reactions}")
            evaluator.storage.close()
    cli = median_result(
        "seed_backlog_cli",
        "backlog: seed sensor, one `runsense sensor tick --no-wait`",
        "1,000 runs",
        samples["cli"],
        "s",
        1.0,
        backend=backend,
    )
    lib = median_result(
        "seed_backlog_in_process",
        "  ↳ the same tick in process (SensorEvaluator.tick)",
        "1,000 runs",
        samples["lib"],
        "s",
        1.0,
        backend=backend,
        role="info",
    )
    return [cli, lib]


def bench_failure_backlog(b: Bench, backend: str) -> list[Result]:
    count = 10_000
    samples = []
    for attempt in range(1 if b.quick else 5):
        db = b.db(backend, f"failures_{attempt}")
        original = template(db, b.module.failing_job)
        evaluator, sensor = b.started_sensor(db, "on_failure")
        clone_runs(db, original, count)
        samples += timed(lambda e=evaluator, s=sensor: e.tick(s), 1)
        [(reactions, write_backs)] = db.query(
            "SELECT (SELECT count(*) FROM reactions),"
            " (SELECT count(*) FROM events WHERE event_type = 'SENSOR_REACTION')"
        )
        if reactions != count or write_backs != count:
            raise RuntimeError(f"expected {count} reactions, found {reactions}/{write_backs}")
        evaluator.storage.close()
    return [
        median_result(
            "failure_backlog",
            "backlog: failure sensor returning None, one tick (in process)",
            f"{count:,} runs",
            samples,
            "s",
            2.0,
            backend=backend,
        )
    ]


def bench_idle_tick(b: Bench, backend: str) -> list[Result]:
    results = []
    big = 100_000 if b.quick else 1_000_000
    repeat = 100 if b.quick else 500
    for count in (1_000, big):
        db = b.db(backend, f"idle_{count}")
        original = template(db, b.module.one_op_job)
        built = clone_runs(db, original, count)
        events = count * len(original.events)
        b.note(f"{backend}: built {count:,} runs + {events:,} events in {built:.1f} s")
        evaluator, sensor = b.started_sensor(db, "report_status_sensor")
        samples = timed(lambda e=evaluator, s=sensor: e.tick(s), repeat, budget=10, warmup=12)
        results.append(
            median_result(
                f"idle_tick_{count}",
                "a tick with nothing new (in process)",
                f"{count:,} runs",
                samples,
                "ms",
                5.0,
                backend=backend,
                scale=1000,
            )
        )
        if count == big:
            state = evaluator.state(sensor)
            now = time.time()
            checks = timed(
                lambda e=evaluator, s=sensor, st=state, t=now: e.has_work(s, st, t),
                repeat,
                budget=10,
                warmup=12,
            )
            results.append(
                Result(
                    "idle_check",
                    "  ↳ the daemon's per-pass check for new events",
                    f"{count:,} runs",
                    statistics.median(checks) * 1000,
                    "ms",
                    5.0,
                    backend=backend,
                    role="info",
                    samples=len(checks),
                    extra=summary(checks, 1000),
                )
            )
        evaluator.storage.close()
        b.release()  # a big database is not kept for the rest of the run
    return results
