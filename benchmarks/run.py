"""Measure runsense against the targets of SPEC §8 and print one table.

    python benchmarks/run.py            # full sizes (about two minutes)
    python benchmarks/run.py --quick    # reduced sizes and repeats, for CI smoke runs (< 60 s)
    python benchmarks/run.py --json results.json

Every fixture (projects, homes, databases) lives in a temp dir and every process runs with
RUNSENSE_HOME set: the user's real data directory is never touched. Big databases are built with
direct SQL outside the timed part. Numbers are printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import traceback
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# The seed's sensor (report_status_sensor + status_reporting_job, as in sample_project/defs.py), a
# failure sensor returning None, and a success sensor scoped to one job, for the daemon workloads.
PROJECT = textwrap.dedent(
    """
    from runsense_cli import (
        DagsterRunStatus, Definitions, RunRequest, SkipReason, job, op,
        run_failure_sensor, run_status_sensor,
    )

    @op
    def one():
        return 1

    @job
    def one_op_job():
        one()

    @op
    def fail():
        raise ValueError("boom")

    @job
    def failing_job():
        fail()

    @op(config_schema={"job_name": str})
    def status_report(context):
        context.log.info(f"Job {context.op_config['job_name']} succeeded.")

    @job
    def status_reporting_job():
        status_report()

    @run_status_sensor(run_status=DagsterRunStatus.SUCCESS, request_job=status_reporting_job)
    def report_status_sensor(context):
        if context.dagster_run.job_name != status_reporting_job.name:
            run_config = {"ops": {"status_report": {"config": {"job_name": context.dagster_run.job_name}}}}
            return RunRequest(run_key=None, run_config=run_config)
        else:
            return SkipReason("Don't report status of status_reporting_job")

    @run_failure_sensor
    def on_failure(context):
        return None

    @run_status_sensor(run_status=DagsterRunStatus.SUCCESS, monitored_jobs=[one_op_job])
    def on_success(context):
        return None

    defs = Definitions(
        jobs=[one_op_job, failing_job],
        sensors=[report_status_sensor, on_failure, on_success],
    )
    """
)
LOCATION = "bench_project"

# `runsense run` from the shell loads the smallest possible project: one op, one job.
TINY_PROJECT = textwrap.dedent(
    """
    from runsense_cli import Definitions, job, op

    @op
    def one():
        return 1

    @job
    def one_op_job():
        one()

    defs = Definitions(jobs=[one_op_job])
    """
)

FINISHED = ("SUCCESS", "FAILURE", "CANCELED")


@dataclass
class Result:
    id: str
    workload: str
    size: str
    value: float
    unit: str
    target: float
    statistic: str = "median"
    # "target": the row SPEC §8's target is about; "info": a supporting measurement.
    role: str = "target"
    samples: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def median(
        cls,
        id: str,
        workload: str,
        size: str,
        samples: Sequence[float],
        unit: str,
        target: float,
        scale: float = 1.0,
    ) -> Result:
        """The usual row: the median of `samples` (seconds, times `scale`) with their summary."""
        return cls(
            id,
            workload,
            size,
            statistics.median(samples) * scale,
            unit,
            target,
            samples=len(samples),
            extra=summary(samples, scale),
        )

    @property
    def met(self) -> bool:
        return self.value <= self.target


def percentile(samples: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100): p95 of 50 samples is the 48th smallest."""
    ordered = sorted(samples)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def summary(samples: Sequence[float], scale: float = 1.0) -> dict[str, Any]:
    return {
        "n": len(samples),
        "min": min(samples) * scale,
        "p50": statistics.median(samples) * scale,
        "p95": percentile(samples, 95) * scale,
        "max": max(samples) * scale,
    }


class Bench:
    def __init__(self, root: Path, quick: bool) -> None:
        self.root = root
        self.quick = quick
        self.project = root / f"{LOCATION}.py"
        self.project.write_text(PROJECT)
        self.tiny = root / "tiny_project.py"
        self.tiny.write_text(TINY_PROJECT)
        sys.path.insert(0, str(root))
        import bench_project  # type: ignore[import-not-found]

        self.module = bench_project
        bench_project.defs.set_location(LOCATION)
        script = Path(sys.executable).with_name("runsense")
        self.runsense = [str(script)] if script.exists() else [sys.executable, "-m", "runsense_cli"]
        self.notes: list[str] = []

    def home(self, name: str) -> Path:
        path = self.root / "homes" / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def env(self, home: Path) -> dict[str, str]:
        return {**os.environ, "RUNSENSE_HOME": str(home)}

    def cli(
        self, home: Path, *args: str, project: Path | None = None, check: bool = True
    ) -> tuple[float, str]:
        """Run `runsense -f PROJECT ARGS...`; return its wall time and stdout."""
        started = time.perf_counter()
        done = subprocess.run(
            [*self.runsense, "-f", str(project or self.project), *args],
            env=self.env(home),
            capture_output=True,
            text=True,
        )
        elapsed = time.perf_counter() - started
        if check and done.returncode != 0:
            raise RuntimeError(
                f"runsense {' '.join(args)} exited {done.returncode}: {done.stderr.strip()}"
            )
        return elapsed, done.stdout

    def started_sensor(self, home: Path, sensor_name: str, page_size: int = 1000):
        """An evaluator on `home` and the named sensor, started with its cursor at the newest event."""
        from runsense_cli.evaluation import SensorEvaluator
        from runsense_cli.records import SensorStatus
        from runsense_cli.storage import open_storage

        storage = open_storage(home)
        evaluator = SensorEvaluator(storage, self.module.defs, page_size=page_size)
        sensor = self.module.defs.get_sensor(sensor_name)
        state = evaluator.state(sensor)
        storage.set_sensor_status(
            state.sensor_id, SensorStatus.RUNNING, cursor=storage.newest_event_id()
        )
        return evaluator, sensor

    def daemon(self, home: Path, name: str) -> subprocess.Popen[bytes]:
        """A real `runsense daemon` with default settings; its output goes to a log file."""
        log = open(self.root / f"{name}-daemon.log", "wb")  # noqa: SIM115 (closed with the process)
        process = subprocess.Popen(
            [*self.runsense, "-f", str(self.project), "daemon"],
            env=self.env(home),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        process.log = log  # type: ignore[attr-defined]
        return process

    def stop(self, process: subprocess.Popen[bytes]) -> None:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        process.log.close()  # type: ignore[attr-defined]

    def daemon_log(self, name: str) -> str:
        return (self.root / f"{name}-daemon.log").read_text(errors="replace")[-2000:]


def bulk_runs(home: Path, count: int, job_name: str, status: str) -> float:
    """Insert `count` finished runs with their status events in one transaction; return seconds.

    Each run gets the status events a real run writes (RUN_STARTING, RUN_START, then RUN_SUCCESS
    or RUN_FAILURE), in the columns of storage.py's schema. Not part of any timing.
    """
    from runsense_cli.storage import open_storage

    started = time.perf_counter()
    if not (home / "runsense.db").exists():
        # Only when no Storage of this process has the file open: Storage.open reads the file's
        # header with plain I/O, and closing that descriptor drops the POSIX locks SQLite holds
        # for the other connection (see the report: "database disk image is malformed").
        open_storage(home).close()  # create the schema
    end_type = {"SUCCESS": "RUN_SUCCESS", "FAILURE": "RUN_FAILURE"}[status]
    end_message = (
        f'Finished execution of run for "{job_name}".'
        if status == "SUCCESS"
        else f'Execution of run for "{job_name}" failed. Step "fail" failed: ValueError: boom'
    )
    now = time.time() - count * 1e-3
    connection = sqlite3.connect(home / "runsense.db", isolation_level=None)
    connection.execute("PRAGMA synchronous = OFF")
    connection.execute("BEGIN")
    chunk = 50_000
    for start in range(0, count, chunk):
        n = min(chunk, count - start)
        ids = [str(uuid.uuid4()) for _ in range(n)]
        times = [now + (start + i) * 1e-3 for i in range(n)]
        connection.executemany(
            "INSERT INTO runs (run_id, job_name, location, status, run_config, tags, created_at,"
            " start_time, end_time, root_run_id) VALUES (?, ?, ?, ?, '{}', '{}', ?, ?, ?, ?)",
            [
                (i, job_name, LOCATION, status, t, t, t + 5e-4, i)
                for i, t in zip(ids, times, strict=True)
            ],
        )
        events = []
        for i, t in zip(ids, times, strict=True):
            events.append((i, "RUN_STARTING", t, f'Starting run of "{job_name}".'))
            events.append((i, "RUN_START", t, f'Started execution of run for "{job_name}".'))
            events.append((i, end_type, t + 5e-4, end_message))
        connection.executemany(
            "INSERT INTO events (run_id, event_type, timestamp, message, job_name, location)"
            f" VALUES (?, ?, ?, ?, '{job_name}', '{LOCATION}')",
            events,
        )
    connection.execute("COMMIT")
    # Steady state: runs that arrive one by one are checkpointed as they go, so the timed part
    # must not pay for copying this bulk load out of the WAL.
    connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    connection.close()
    # And on disk: else the first fsync of a timed commit waits for the kernel to write it all.
    os.sync()
    return time.perf_counter() - started


def timed(fn: Callable[[], object], repeat: int) -> list[float]:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return samples


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


def query(home: Path, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    connection = sqlite3.connect(home / "runsense.db", timeout=30)
    try:
        return connection.execute(sql, params).fetchall()
    finally:
        connection.close()


# -- workloads ---------------------------------------------------------------------------------


def bench_help(b: Bench) -> list[Result]:
    home = b.home("help")
    repeat = 5 if b.quick else 11
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run([*b.runsense, "--help"], env=b.env(home), capture_output=True, check=True)
        samples.append(time.perf_counter() - started)
    return [
        Result.median(
            "help",
            "runsense --help (cold start)",
            "-",
            samples,
            "s",
            0.13,
        )
    ]


def bench_run_shell(b: Bench) -> list[Result]:
    home = b.home("run_shell")
    b.cli(home, "run", "one_op_job", project=b.tiny)  # the database exists before timing
    repeat = 5 if b.quick else 11
    samples = [b.cli(home, "run", "one_op_job", project=b.tiny)[0] for _ in range(repeat)]
    return [
        Result.median(
            "run_shell",
            "runsense run, one-op job, from the shell",
            "-",
            samples,
            "s",
            0.25,
        )
    ]


def bench_in_process(b: Bench) -> list[Result]:
    home = b.home("in_process")
    job = b.module.one_op_job
    job.execute_in_process(home=str(home))  # first call opens (and creates) the database
    repeat = 200 if b.quick else 1000
    samples = timed(lambda: job.execute_in_process(home=str(home)), repeat)
    return [
        Result.median(
            "in_process",
            "one-op run in process, with storage",
            "-",
            samples,
            "ms",
            3.0,
            scale=1000,
        )
    ]


def bench_seed_backlog(b: Bench) -> list[Result]:
    """The target is one `runsense sensor tick --no-wait` subprocess; in-process is for context."""
    count = 1000
    attempts = 2 if b.quick else 5
    cli_samples, lib_samples = [], []
    for attempt in range(attempts):
        for kind in ("cli", "lib"):
            home = b.home(f"seed_{kind}_{attempt}")
            evaluator, sensor = b.started_sensor(home, "report_status_sensor")
            bulk_runs(home, count, "one_op_job", "SUCCESS")
            if kind == "cli":
                elapsed, out = b.cli(home, "sensor", "tick", "report_status_sensor", "--no-wait")
                cli_samples.append(elapsed)
                # --no-wait still starts up to 4 run workers: let them finish before timing more.
                launched = int(m.group(1)) if (m := re.search(r"Launched (\d+)", out)) else 0
                wait_for(
                    lambda h=home, n=launched: (
                        query(
                            h,
                            "SELECT count(*) FROM runs WHERE job_name = 'status_reporting_job'"
                            f" AND status IN {FINISHED}",
                        )[0][0]
                        >= n
                    ),
                    60,
                    "the run workers `sensor tick --no-wait` launched",
                )
            else:
                lib_samples += timed(lambda e=evaluator, s=sensor: e.tick(s), 1)
            made, reactions = evaluator.storage.conn.execute(
                "SELECT (SELECT count(*) FROM runs WHERE job_name = 'status_reporting_job'),"
                " (SELECT count(*) FROM reactions)"
            ).fetchone()
            if made != count or reactions != count:
                raise RuntimeError(f"expected {count} runs and reactions, found {made}/{reactions}")
            evaluator.storage.close()
    return [
        Result(
            "seed_backlog_cli",
            "backlog: seed sensor, one `runsense sensor tick --no-wait`",
            "1,000 runs",
            statistics.median(cli_samples),
            "s",
            1.0,
            samples=attempts,
            extra=summary(cli_samples),
        ),
        Result(
            "seed_backlog_in_process",
            "  ↳ the same tick in process (SensorEvaluator.tick)",
            "1,000 runs",
            statistics.median(lib_samples),
            "s",
            1.0,
            role="info",
            samples=attempts,
            extra=summary(lib_samples),
        ),
    ]


def bench_failure_backlog(b: Bench) -> list[Result]:
    count = 10_000
    attempts = 2 if b.quick else 5
    samples = []
    for attempt in range(attempts):
        home = b.home(f"failures_{attempt}")
        evaluator, sensor = b.started_sensor(home, "on_failure")
        bulk_runs(home, count, "failing_job", "FAILURE")
        samples += timed(lambda e=evaluator, s=sensor: e.tick(s), 1)
        reactions, write_backs = evaluator.storage.conn.execute(
            "SELECT (SELECT count(*) FROM reactions),"
            " (SELECT count(*) FROM events WHERE event_type = 'SENSOR_REACTION')"
        ).fetchone()
        if reactions != count or write_backs != count:
            raise RuntimeError(f"expected {count} reactions, found {reactions}/{write_backs}")
        evaluator.storage.close()
    return [
        Result.median(
            "failure_backlog",
            "backlog: failure sensor returning None, one tick (in process)",
            f"{count:,} runs",
            samples,
            "s",
            2.0,
        )
    ]


def bench_idle_tick(b: Bench) -> list[Result]:
    results = []
    big = 100_000 if b.quick else 1_000_000
    repeat = 100 if b.quick else 500
    for count in (1_000, big):
        home = b.home(f"idle_{count}")
        built = bulk_runs(home, count, "one_op_job", "SUCCESS")
        b.notes.append(f"built {count:,} runs + {3 * count:,} status events in {built:.1f} s")
        evaluator, sensor = b.started_sensor(home, "report_status_sensor")
        evaluator.tick(sensor)  # warm the page cache
        samples = timed(lambda e=evaluator, s=sensor: e.tick(s), repeat)
        results.append(
            Result.median(
                f"idle_tick_{count}",
                "a tick with nothing new (in process)",
                f"{count:,} runs",
                samples,
                "ms",
                5.0,
                scale=1000,
            )
        )
        if count == big:
            state = evaluator.state(sensor)
            now = time.time()
            checks = timed(
                lambda e=evaluator, s=sensor, st=state, t=now: e.has_work(s, st, t), repeat
            )
            results.append(
                Result(
                    "idle_check",
                    "  ↳ the daemon's per-pass check for new events",
                    f"{count:,} runs",
                    statistics.median(checks) * 1000,
                    "ms",
                    5.0,
                    role="info",
                    samples=repeat,
                    extra=summary(checks, 1000),
                )
            )
        evaluator.storage.close()
    return results


def bench_daemon_latency(b: Bench) -> list[Result]:
    home = b.home("latency")
    runs = 10 if b.quick else 50
    b.cli(home, "sensor", "start", "on_success")
    daemon = b.daemon(home, "latency")
    job = b.module.one_op_job
    sql = (
        "SELECT e.id, e.timestamp, r.created_at FROM reactions r"
        " JOIN sensors s ON s.id = r.sensor_id JOIN events e ON e.id = r.event_id"
        " WHERE s.name = 'on_success' ORDER BY e.id"
    )
    try:
        # A warm-up run, not counted: measure from the moment the daemon is surely ticking.
        job.execute_in_process(home=str(home))
        wait_for(lambda: len(query(home, sql)) >= 1, 30, "the daemon's first reaction")
        first_measured = query(home, sql)[-1][0]
        rng = random.Random(7)
        for _ in range(runs):
            time.sleep(rng.uniform(0.3, 0.7))
            job.execute_in_process(home=str(home))
            if daemon.poll() is not None:
                raise RuntimeError(f"the daemon exited: {b.daemon_log('latency')}")
        wait_for(lambda: len(query(home, sql)) >= runs + 1, 30, f"{runs} reactions")
    finally:
        b.stop(daemon)
    delays = [
        reacted - ended
        for event_id, ended, reacted in query(home, sql)
        if event_id > first_measured
    ]
    if len(delays) != runs:
        raise RuntimeError(f"{len(delays)} reactions for {runs} runs")
    stats = summary(delays)
    return [
        Result(
            "daemon_latency_p50",
            "daemon: run end → reaction stored",
            f"{runs} runs",
            stats["p50"],
            "s",
            0.5,
            "p50",
            samples=runs,
            extra=stats,
        ),
        Result(
            "daemon_latency_p95",
            "daemon: run end → reaction stored",
            f"{runs} runs",
            stats["p95"],
            "s",
            1.0,
            "p95",
            samples=runs,
            extra=stats,
        ),
    ]


def bench_daemon_idle(b: Bench) -> list[Result]:
    home = b.home("idle_daemon")
    b.cli(home, "sensor", "start", "--all")
    window = 5.0 if b.quick else 30.0
    daemon = b.daemon(home, "idle")
    try:
        time.sleep(2.0)  # start-up (imports, first pass) is not idle time
        if daemon.poll() is not None:
            raise RuntimeError(f"the daemon exited: {b.daemon_log('idle')}")
        clock_ticks = os.sysconf("SC_CLK_TCK")
        before, started = _cpu_ticks(daemon.pid), time.monotonic()
        time.sleep(window)
        used = (_cpu_ticks(daemon.pid) - before) / clock_ticks
        elapsed = time.monotonic() - started
        status = _proc_status(daemon.pid)
    finally:
        b.stop(daemon)
    rss, peak = status["VmRSS"], status["VmHWM"]
    return [
        Result(
            "daemon_idle_rss",
            "daemon idle: resident memory (VmRSS)",
            f"{window:.0f} s",
            rss,
            "MB",
            60.0,
            "at end",
            extra={"peak_mb": peak},
        ),
        Result(
            "daemon_idle_cpu",
            "daemon idle: CPU, % of one core",
            f"{window:.0f} s",
            used / elapsed * 100,
            "%",
            2.0,
            "mean",
            extra={"cpu_seconds": used, "window_s": elapsed},
        ),
    ]


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime, in clock ticks


def _proc_status(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak RSS) of a process, in MB."""
    out = {"VmRSS": float("nan"), "VmHWM": float("nan")}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key = line.split(":", 1)[0]
        if key in out:
            out[key] = int(line.split()[1]) / 1024
    return out


WORKLOADS = (
    bench_help,
    bench_run_shell,
    bench_in_process,
    bench_seed_backlog,
    bench_failure_backlog,
    bench_idle_tick,
    bench_daemon_latency,
    bench_daemon_idle,
)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="reduced sizes and repeats, for CI")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results here")
    args = parser.parse_args()

    from rich.console import Console
    from rich.table import Table

    import runsense_cli

    console = Console()
    if not console.is_terminal:
        console = Console(width=130)
    environment = {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "runsense": runsense_cli.__version__,
        "platform": platform.platform(terse=True),
        "mode": "quick" if args.quick else "full",
    }
    console.print(
        "[bold]runsense benchmarks[/bold] · "
        + " · ".join(f"{k} {v}" for k, v in environment.items() if k != "platform")
    )
    results: list[Result] = []
    errors: list[str] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="runsense-bench-") as tmp:
        # Anything that forgets its own home still lands in the temp dir, never the real one.
        os.environ["RUNSENSE_HOME"] = str(Path(tmp) / "default-home")
        bench = Bench(Path(tmp), args.quick)
        for workload in WORKLOADS:
            console.print(f"[dim]running {workload.__name__}…[/dim]")
            try:
                results += workload(bench)
            except Exception:
                errors.append(f"{workload.__name__}: {traceback.format_exc()}")
                console.print(f"[red]{workload.__name__} failed[/red]\n{traceback.format_exc()}")
    for note in bench.notes:
        console.print(f"[dim]{note}[/dim]")

    table = Table(
        title=f"runsense {environment['runsense']} · {environment['cores']} cores · Python "
        f"{environment['python']} · SQLite {environment['sqlite']} · {environment['mode']} mode",
        header_style="bold",
    )
    for column in ("workload", "size", "result", "target", "met"):
        table.add_column(column)
    for r in results:
        met = "[green]yes[/green]" if r.met else "[red]no[/red]"
        table.add_row(
            r.workload,
            r.size,
            f"{r.statistic} {r.value:.3g} {r.unit}",
            f"≤ {r.target:g} {r.unit}",
            f"({met})" if r.role == "info" else met,
        )
    console.print(table)
    targets = [r for r in results if r.role == "target"]
    console.print(
        f"{sum(r.met for r in targets)} of {len(targets)} targets met "
        f"(rows marked ↳ are supporting measurements) · {time.monotonic() - started:.0f} s"
    )
    if args.json:
        document = {
            "environment": environment,
            "results": [{**asdict(r), "met": r.met} for r in results],
            "notes": bench.notes,
            "errors": errors,
        }
        args.json.write_text(json.dumps(document, indent=2))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
