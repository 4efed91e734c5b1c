"""What every workload shares: the bench project, result rows, fresh databases on either backend,
the throwaway PostgreSQL server, subprocesses, and statistics.

Every database is new for its workload (a SQLite home in the temp dir, or a PostgreSQL database
created from a template that already holds the schema), so no workload sees another's rows.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
LOCATION = "bench_project"
FINISHED = ("SUCCESS", "FAILURE", "CANCELED")
BACKENDS = ("sqlite", "postgres")

# The seed's sensor (report_status_sensor + status_reporting_job, as in sample_project/defs.py), a
# failure sensor and a success sensor returning None, and a run-requesting sensor scoped to one job
# whose requested job it does not watch (for the three-daemon drain).
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

    @job
    def requested_job():
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

    @run_status_sensor(
        run_status=DagsterRunStatus.SUCCESS, monitored_jobs=[one_op_job], request_job=requested_job
    )
    def request_on_success(context):
        return RunRequest(run_key=None)

    # Watches successes of a job that never succeeds: every success in the home is outside its
    # scope (the per-pass check must not read them again and again).
    @run_status_sensor(run_status=DagsterRunStatus.SUCCESS, monitored_jobs=[failing_job])
    def scoped_away(context):
        return None

    defs = Definitions(
        jobs=[one_op_job, requested_job, failing_job],
        sensors=[report_status_sensor, on_failure, on_success, request_on_success, scoped_away],
    )
    """
)

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


def compile_bytecode() -> bool:
    """Write runsense's bytecode, as `pip install` does, before anything is timed; True if any
    was missing. Without it, a checkout run with PYTHONDONTWRITEBYTECODE (as here) compiles
    every imported module from source on every start: ~60 ms of each command, none of a user's.
    """
    import compileall

    package = REPO / "runsense_cli"
    missing = any(not (path.parent / "__pycache__").is_dir() for path in package.rglob("*.py"))
    compileall.compile_dir(package, quiet=1)
    return missing


# -- results ------------------------------------------------------------------------------------


@dataclass
class Result:
    """One row of the table: a measurement beside its SPEC §8 target."""

    key: str
    workload: str
    size: str
    value: float
    unit: str
    target: float
    backend: str = "-"  # "sqlite", "postgres", or "-" when no database is involved
    statistic: str = "median"
    better: str = "lower"  # "lower": the target is a ceiling; "higher": a floor
    spec: str = "r1"  # which round of SPEC §8 set the target
    # "target": the row a SPEC §8 target is about; "info": a supporting measurement.
    role: str = "target"
    samples: int = 1
    extra: dict[str, Any] = field(default_factory=dict)
    id: str = ""

    def __post_init__(self) -> None:
        self.id = self.key if self.backend == "-" else f"{self.backend}.{self.key}"

    @property
    def met(self) -> bool:
        if not math.isfinite(self.value):
            return False
        return self.value <= self.target if self.better == "lower" else self.value >= self.target


def median_result(
    key: str,
    workload: str,
    size: str,
    samples: Sequence[float],
    unit: str,
    target: float,
    *,
    backend: str = "-",
    scale: float = 1.0,
    spec: str = "r1",
    role: str = "target",
) -> Result:
    """The usual row: the median of `samples` (seconds, times `scale`) with their summary."""
    return Result(
        key,
        workload,
        size,
        statistics.median(samples) * scale,
        unit,
        target,
        backend=backend,
        spec=spec,
        role=role,
        samples=len(samples),
        extra=summary(samples, scale),
    )


def percentile(samples: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100): p95 of 200 samples is the 190th smallest."""
    ordered = sorted(samples)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def summary(samples: Sequence[float], scale: float = 1.0) -> dict[str, Any]:
    return {
        "n": len(samples),
        "min": min(samples) * scale,
        "p50": statistics.median(samples) * scale,
        "p95": percentile(samples, 95) * scale,
        "p99": percentile(samples, 99) * scale,
        "max": max(samples) * scale,
    }


def timed(
    fn: Callable[[], object], repeat: int, budget: float | None = None, warmup: int = 0
) -> list[float]:
    """`repeat` timings of `fn`, or fewer (at least 10) once `budget` seconds are spent: a slow
    case is reported as slow without holding the whole run up.

    `warmup` untimed calls first reach the steady state of something called forever (a daemon's
    pass): psycopg prepares a statement on its 5th run, and PostgreSQL may switch a prepared
    statement to a generic plan after 5 more, for better or worse.
    """
    for _ in range(warmup):
        fn()
    samples: list[float] = []
    spent = 0.0
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
        spent += samples[-1]
        if budget is not None and spent > budget and len(samples) >= 10:
            break
    return samples


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, poll: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(poll)


# -- /proc --------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU a process has used so far (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def memory_mb(pid: int | str = "self") -> dict[str, float]:
    """VmRSS and VmHWM (peak RSS) of a process, in MB."""
    out = {"VmRSS": float("nan"), "VmHWM": float("nan")}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key = line.split(":", 1)[0]
        if key in out:
            out[key] = int(line.split()[1]) / 1024
    return out


def fsync_ms(directory: Path, writes: int = 20) -> dict[str, float]:
    """How long this disk takes to make 8 kB durable (write + fdatasync), median and p95 in ms.

    PostgreSQL waits for one of these at every commit, so on a shared VM whose disk is busy the
    PostgreSQL rows move with it; SQLite (WAL, synchronous=NORMAL) syncs only at checkpoints.
    """
    path = directory / "fsync-probe"
    samples = []
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
    try:
        for _ in range(writes):
            started = time.perf_counter()
            os.pwrite(fd, os.urandom(8192), 0)
            os.fdatasync(fd)
            samples.append((time.perf_counter() - started) * 1000)
    finally:
        os.close(fd)
        path.unlink()
    return {"p50": statistics.median(samples), "p95": percentile(samples, 95)}


# -- databases ----------------------------------------------------------------------------------

# What tests/pg_server.py changes for speed, put back to PostgreSQL's defaults.
POSTGRES_DEFAULTS = {
    "fsync": "on",
    "full_page_writes": "on",
    "shared_buffers": "128MB",
    "max_parallel_workers_per_gather": "2",
}


class PostgresHost:
    """The one throwaway PostgreSQL server of a benchmark run (tests/pg_server.py).

    The test helper tunes its server for speed (fsync off, 32 MB of shared buffers); a benchmark
    should see what a user's local server does, so the defaults are put back: fsync and full page
    writes on, 128 MB of shared buffers. The runsense schema is created once, in a template
    database every workload's database is copied from.
    """

    TEMPLATE = "bench_template"

    def __init__(self, fsync: bool = True) -> None:
        from runsense_cli.storage import open_storage
        from tests.pg_server import PgServer, find_bindir

        self.server = PgServer(find_bindir(), name="runsense-bench-pg")
        self.count = 0
        self.settings = dict(POSTGRES_DEFAULTS)
        if not fsync:  # as the tests run it: durable against a server crash, not an OS crash
            self.settings.update(fsync="off", full_page_writes="off")
        try:
            self.server.start()
            with self.server.connect() as connection:
                for name, value in self.settings.items():
                    connection.execute(f"ALTER SYSTEM SET {name} = '{value}'")
            self.server.restart()
            with self.server.connect() as connection:
                self.version = connection.execute("SHOW server_version").fetchone()[0]
            open_storage(url=self.server.create_database(self.TEMPLATE)).close()
        except BaseException:
            self.server.cleanup()
            raise

    @property
    def description(self) -> str:
        settings = ", ".join(
            f"{k} {v}" for k, v in self.settings.items() if k != "max_parallel_workers_per_gather"
        )
        return f"PostgreSQL {self.version}, local server ({settings})"

    def create(self, label: str) -> tuple[str, str]:
        """A new database with the runsense schema: (name, URL)."""
        self.count += 1
        name = f"w{self.count:03d}_{label}"[:60]
        return name, self.server.create_database(name, template=self.TEMPLATE)

    def drop(self, name: str) -> None:
        self.server.drop_database(name)

    def connect(self, name: str) -> Any:
        return self.server.connect(name)

    def checkpoint(self) -> None:
        """Write out what earlier workloads left dirty, so it does not slow the next one's commits."""
        with self.server.connect() as connection:
            connection.execute("CHECKPOINT")

    def cleanup(self) -> None:
        self.server.cleanup()


def postgres_missing() -> str | None:
    """Why the PostgreSQL half cannot run here (one line), or None."""
    from tests.pg_server import postgres_unavailable

    return postgres_unavailable()


@dataclass
class Db:
    """One workload's database: a SQLite home, or a PostgreSQL database (plus a home for logs)."""

    backend: str
    home: Path
    url: str | None = None
    name: str = ""
    _connection: Any = None

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a runsense process on this database."""
        env = {**os.environ, "RUNSENSE_HOME": str(self.home), **extra}
        env.pop("RUNSENSE_DATABASE_URL", None)
        if self.url:
            env["RUNSENSE_DATABASE_URL"] = self.url
        return env

    def open(self) -> Any:
        """A runsense Storage on this database, as the CLI would open it."""
        from runsense_cli.storage import open_storage

        return open_storage(self.home, url=self.url)

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """`execute_in_process` in this process writes here (it reads RUNSENSE_DATABASE_URL)."""
        if self.url:
            os.environ["RUNSENSE_DATABASE_URL"] = self.url
        try:
            yield
        finally:
            os.environ.pop("RUNSENSE_DATABASE_URL", None)

    def execute_in_process(self, job: Any) -> Any:
        with self.active():
            return job.execute_in_process(home=str(self.home))

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Plain SQL (`?` placeholders) on a connection of the benchmark's own, not runsense's."""
        return self._cursor(sql, params).fetchall()

    def query_dicts(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        cursor = self._cursor(sql, params)
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def _cursor(self, sql: str, params: Sequence[Any]) -> Any:
        if self.url is None:
            if self._connection is None:
                self._connection = sqlite3.connect(
                    self.home / "runsense.db", timeout=30, isolation_level=None
                )
            return self._connection.execute(sql, tuple(params))
        if self._connection is None:
            import psycopg

            self._connection = psycopg.connect(self.url, autocommit=True)
        return self._connection.execute(sql.replace("%", "%%").replace("?", "%s"), tuple(params))

    def close(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):
                self._connection.close()
            self._connection = None


# -- the bench ----------------------------------------------------------------------------------


class Bench:
    """The temp dir, the project module, the PostgreSQL server (if any), and what was started."""

    def __init__(
        self,
        root: Path,
        quick: bool,
        postgres: PostgresHost | None,
        drain_wait: float | None = None,
    ) -> None:
        self.root = root
        self.quick = quick
        self.postgres = postgres
        self.drain_wait = drain_wait  # seconds the drain waits for its runs (None: the default)
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
        self.processes: list[subprocess.Popen[bytes]] = []
        self._databases: list[Db] = []
        self._homes = 0

    def home(self, name: str) -> Path:
        self._homes += 1
        path = self.root / "homes" / f"{self._homes:03d}_{name}"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def db(self, backend: str, name: str) -> Db:
        """A fresh, empty database with the schema on `backend`; released after the workload."""
        home = self.home(f"{backend}_{name}")
        if backend == "sqlite":
            db = Db("sqlite", home)
            db.open().close()  # the schema, as any first command creates it
        else:
            assert self.postgres is not None, "PostgreSQL is not available"
            db_name, url = self.postgres.create(name)
            db = Db("postgres", home, url, db_name)
        self._databases.append(db)
        return db

    def release(self) -> None:
        """After a workload: stop what it left running, close and drop its databases, and let
        the disk settle (a PostgreSQL checkpoint, then sync) before the next one is timed."""
        self.stop_all()
        dropped = False
        for db in self._databases:
            db.close()
            if db.url and self.postgres is not None:
                with contextlib.suppress(Exception):
                    self.postgres.drop(db.name)
                    dropped = True
        self._databases.clear()
        if dropped and self.postgres is not None:
            with contextlib.suppress(Exception):
                self.postgres.checkpoint()
        os.sync()

    def note(self, text: str) -> None:
        self.notes.append(text)

    # -- processes ------------------------------------------------------------------------------

    def cli(
        self, db: Db, *args: str, project: Path | None = None, check: bool = True
    ) -> tuple[float, str]:
        """Run `runsense -f PROJECT ARGS...` on `db`; return its wall time and stdout."""
        started = time.perf_counter()
        done = subprocess.run(
            [*self.runsense, "-f", str(project or self.project), *args],
            env=db.env(),
            capture_output=True,
            text=True,
        )
        elapsed = time.perf_counter() - started
        if check and done.returncode != 0:
            raise RuntimeError(
                f"runsense {' '.join(args)} exited {done.returncode}: {done.stderr.strip()}"
            )
        return elapsed, done.stdout

    def started_sensor(self, db: Db, sensor_name: str, page_size: int = 1000) -> tuple[Any, Any]:
        """An evaluator on `db` and the named sensor, started (by a user) at the newest event."""
        from runsense_cli.evaluation import SensorEvaluator
        from runsense_cli.records import SensorStatus

        storage = db.open()
        evaluator = SensorEvaluator(storage, self.module.defs, page_size=page_size)
        sensor = self.module.defs.get_sensor(sensor_name)
        state = evaluator.state(sensor)
        storage.set_sensor_status(
            state.sensor_id, SensorStatus.RUNNING, cursor=storage.newest_event_id()
        )
        return evaluator, sensor

    def daemon(self, db: Db, name: str, *args: str, **env: str) -> subprocess.Popen[bytes]:
        """A real `runsense daemon` on `db`; its output goes to `<name>-daemon.log`."""
        with open(self.root / f"{name}-daemon.log", "ab") as log:
            process = subprocess.Popen(
                [*self.runsense, "-f", str(self.project), "daemon", *args],
                env=db.env(PYTHONUNBUFFERED="1", **env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )  # same process group: a Ctrl-C at the terminal stops it too, cleanly
        self.processes.append(process)
        return process

    def daemon_log(self, name: str) -> str:
        return (self.root / f"{name}-daemon.log").read_text(errors="replace")[-2000:]

    def stop(self, process: subprocess.Popen[bytes]) -> None:
        """SIGTERM, then SIGKILL if it is still there after 10 s (the daemon promises 5 s)."""
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process in self.processes:
            self.processes.remove(process)

    def stop_all(self) -> None:
        for process in list(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in list(self.processes):
            self.stop(process)
