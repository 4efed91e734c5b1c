"""Measure runsense against the targets of SPEC §8 and print one table.

    python benchmarks/run.py            # full sizes (a few minutes)
    python benchmarks/run.py --quick    # reduced sizes, for CI smoke runs (well under a minute)
    python benchmarks/run.py --json results.json

Everything runs in temp dirs with RUNSENSE_HOME set: the user's real data is never touched.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

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
        return context.op_config["job_name"]

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


@dataclass
class Result:
    workload: str
    size: str
    value: float
    unit: str
    target: float
    statistic: str = "median"

    @property
    def met(self) -> bool:
        return self.value <= self.target


class Bench:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.project = root / f"{LOCATION}.py"
        self.project.write_text(PROJECT)
        sys.path.insert(0, str(root))
        import bench_project

        self.module = bench_project
        bench_project.defs.set_location(LOCATION)
        self.runsense = [sys.executable, "-m", "runsense_cli"]
        script = Path(sys.executable).with_name("runsense")
        if script.exists():
            self.runsense = [str(script)]

    def home(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(exist_ok=True)
        return path

    def env(self, home: Path) -> dict[str, str]:
        return {**os.environ, "RUNSENSE_HOME": str(home)}

    def cli(self, home: Path, *args: str) -> float:
        started = time.perf_counter()
        subprocess.run(
            [*self.runsense, "-f", str(self.project), *args],
            env=self.env(home),
            check=False,
            capture_output=True,
        )
        return time.perf_counter() - started

    def started_sensor(self, home: Path, sensor_name: str, page_size: int = 1000):
        from runsense_cli.evaluation import SensorEvaluator
        from runsense_cli.records import SensorStatus
        from runsense_cli.storage import Storage

        storage = Storage.open(home)
        evaluator = SensorEvaluator(storage, self.module.defs, page_size=page_size)
        sensor = self.module.defs.get_sensor(sensor_name)
        state = evaluator.state(sensor)
        storage.set_sensor_status(
            state.sensor_id, SensorStatus.RUNNING, cursor=storage.newest_event_id()
        )
        return evaluator, sensor


def bulk_runs(home: Path, count: int, job_name: str, status: str) -> None:
    """Insert `count` finished runs and their status events in one transaction (not timed)."""
    from runsense_cli.storage import Storage

    Storage.open(home).close()  # create the schema
    now = time.time()
    event_type = {"SUCCESS": "RUN_SUCCESS", "FAILURE": "RUN_FAILURE"}[status]
    message = f'Execution of run for "{job_name}" failed. Step "fail" failed: ValueError: boom'
    connection = sqlite3.connect(home / "runsense.db")
    with connection:
        for start in range(0, count, 50_000):
            ids = [str(uuid.uuid4()) for _ in range(min(50_000, count - start))]
            connection.executemany(
                "INSERT INTO runs (run_id, job_name, location, status, run_config, tags, created_at,"
                " start_time, end_time, root_run_id) VALUES (?, ?, ?, ?, '{}', '{}', ?, ?, ?, ?)",
                [(i, job_name, LOCATION, status, now, now, now, i) for i in ids],
            )
            connection.executemany(
                "INSERT INTO events (run_id, event_type, timestamp, message, job_name, location)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [(i, event_type, now, message, job_name, LOCATION) for i in ids],
            )
    connection.close()


def timed(fn: Callable[[], object], repeat: int) -> list[float]:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return samples


def bench_help(b: Bench, quick: bool) -> Result:
    home = b.home("help")
    samples = []
    for _ in range(5 if quick else 9):
        started = time.perf_counter()
        subprocess.run([*b.runsense, "--help"], env=b.env(home), capture_output=True, check=True)
        samples.append(time.perf_counter() - started)
    return Result("runsense --help (cold start)", "-", statistics.median(samples), "s", 0.13)


def bench_run_shell(b: Bench, quick: bool) -> Result:
    home = b.home("run_shell")
    b.cli(home, "run", "one_op_job")  # create the database first
    samples = [b.cli(home, "run", "one_op_job") for _ in range(5 if quick else 9)]
    return Result(
        "runsense run, one-op job, from the shell", "-", statistics.median(samples), "s", 0.25
    )


def bench_in_process(b: Bench, quick: bool) -> Result:
    home = b.home("in_process")
    job = b.module.one_op_job
    job.execute_in_process(home=str(home))
    samples = timed(lambda: job.execute_in_process(home=str(home)), 100 if quick else 500)
    return Result(
        "one-op run in process, with storage", "-", statistics.median(samples) * 1000, "ms", 3.0
    )


def bench_seed_backlog(b: Bench, quick: bool) -> list[Result]:
    count = 1000
    cli_samples, lib_samples = [], []
    for attempt in range(2 if quick else 3):
        for kind, samples in (("cli", cli_samples), ("lib", lib_samples)):
            home = b.home(f"seed_{kind}_{attempt}")
            evaluator, sensor = b.started_sensor(home, "report_status_sensor")
            bulk_runs(home, count, "one_op_job", "SUCCESS")
            if kind == "cli":
                samples.append(b.cli(home, "sensor", "tick", "report_status_sensor", "--no-wait"))
            else:
                samples += timed(lambda e=evaluator, s=sensor: e.tick(s), 1)
            made = evaluator.storage.db.execute(
                "SELECT count(*) FROM runs WHERE job_name = 'status_reporting_job'"
            ).fetchone()[0]
            assert made == count, f"expected {count} requested runs, found {made}"
    return [
        Result(
            "backlog: seed sensor, one `sensor tick --no-wait`",
            "1,000 runs",
            statistics.median(cli_samples),
            "s",
            1.0,
        ),
        Result(
            "  the same tick in process (no CLI start-up)",
            "1,000 runs",
            statistics.median(lib_samples),
            "s",
            1.0,
        ),
    ]


def bench_failure_backlog(b: Bench, quick: bool) -> Result:
    count = 2000 if quick else 10_000
    samples = []
    for attempt in range(2 if quick else 3):
        home = b.home(f"failures_{attempt}")
        evaluator, sensor = b.started_sensor(home, "on_failure")
        bulk_runs(home, count, "failing_job", "FAILURE")
        samples += timed(lambda e=evaluator, s=sensor: e.tick(s), 1)
        assert evaluator.lag(sensor) == 0
    return Result(
        "backlog: failure sensor returning None, one tick",
        f"{count:,} runs",
        statistics.median(samples),
        "s",
        2.0,
    )


def bench_idle_tick(b: Bench, quick: bool) -> list[Result]:
    results = []
    for count in (1_000, 100_000 if quick else 1_000_000):
        home = b.home(f"idle_{count}")
        bulk_runs(home, count, "one_op_job", "SUCCESS")
        evaluator, sensor = b.started_sensor(home, "report_status_sensor")
        samples = timed(lambda e=evaluator, s=sensor: e.tick(s), 50 if quick else 200)
        results.append(
            Result(
                "a tick with nothing new",
                f"{count:,} runs",
                statistics.median(samples) * 1000,
                "ms",
                5.0,
            )
        )
    return results


def bench_daemon_latency(b: Bench, quick: bool) -> list[Result]:
    home = b.home("latency")
    runs = 10 if quick else 50
    b.cli(home, "sensor", "start", "on_success")
    daemon = subprocess.Popen(
        [*b.runsense, "-f", str(b.project), "daemon"],
        env=b.env(home),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(1.0)
        rng = random.Random(7)
        for _ in range(runs):
            b.module.one_op_job.execute_in_process(home=str(home))
            time.sleep(rng.uniform(0.3, 0.7))
        deadline = time.monotonic() + 20
        while len(delays := _reaction_delays(home)) < runs and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        daemon.terminate()
        daemon.wait(timeout=10)
    assert len(delays) == runs, f"{len(delays)} reactions for {runs} runs"
    delays.sort()
    p95 = delays[min(len(delays) - 1, round(0.95 * len(delays)) - 1)]
    return [
        Result(
            "daemon: run end → reaction stored",
            f"{runs} runs",
            statistics.median(delays),
            "s",
            0.5,
            "p50",
        ),
        Result("daemon: run end → reaction stored", f"{runs} runs", p95, "s", 1.0, "p95"),
    ]


def _reaction_delays(home: Path) -> list[float]:
    connection = sqlite3.connect(home / "runsense.db", timeout=30)
    try:
        return [
            reacted - ended
            for ended, reacted in connection.execute(
                "SELECT e.timestamp, r.created_at FROM reactions r JOIN sensors s ON s.id = r.sensor_id"
                " JOIN events e ON e.id = r.event_id WHERE s.name = 'on_success'"
            )
        ]
    finally:
        connection.close()


def bench_daemon_idle(b: Bench, quick: bool) -> list[Result]:
    home = b.home("idle_daemon")
    b.cli(home, "sensor", "start", "--all")
    window = 5.0 if quick else 30.0
    daemon = subprocess.Popen(
        [*b.runsense, "-f", str(b.project), "daemon"],
        env=b.env(home),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(2.0)
        ticks = os.sysconf("SC_CLK_TCK")
        before = _cpu_ticks(daemon.pid)
        time.sleep(window)
        cpu = (_cpu_ticks(daemon.pid) - before) / ticks / window * 100
        rss = _rss_mb(daemon.pid)
    finally:
        daemon.terminate()
        daemon.wait(timeout=10)
    return [
        Result("daemon idle: resident memory", f"{window:.0f} s", rss, "MB", 60.0, "at end"),
        Result("daemon idle: CPU of one core", f"{window:.0f} s", cpu, "%", 2.0, "mean"),
    ]


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="reduced sizes for CI")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    from rich.console import Console
    from rich.table import Table

    import runsense_cli

    console = Console()
    environment = {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "runsense": runsense_cli.__version__,
        "mode": "quick" if args.quick else "full",
    }
    console.print("runsense benchmarks · " + " · ".join(f"{k} {v}" for k, v in environment.items()))
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="runsense-bench-") as tmp:
        bench = Bench(Path(tmp))
        os.environ["RUNSENSE_HOME"] = str(Path(tmp) / "default-home")
        for workload in (
            bench_help,
            bench_run_shell,
            bench_in_process,
            bench_seed_backlog,
            bench_failure_backlog,
            bench_idle_tick,
            bench_daemon_latency,
            bench_daemon_idle,
        ):
            console.print(f"[dim]running {workload.__name__}…[/dim]")
            produced = workload(bench, args.quick)
            results += produced if isinstance(produced, list) else [produced]

    table = Table(header_style="bold")
    for column in ("workload", "size", "result", "target", "met"):
        table.add_column(column)
    for r in results:
        table.add_row(
            r.workload,
            r.size,
            f"{r.statistic} {r.value:.3g} {r.unit}",
            f"≤ {r.target:g} {r.unit}",
            "[green]yes[/green]" if r.met else "[red]no[/red]",
        )
    console.print(table)
    if args.json:
        document = {
            "environment": environment,
            "results": [{**asdict(r), "met": r.met} for r in results],
        }
        args.json.write_text(json.dumps(document, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
