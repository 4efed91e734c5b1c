"""`benchmarks/run.py --quick` runs end to end and reports every SPEC §8 workload, on SQLite and,
where PostgreSQL is available, on PostgreSQL too.

Only that the command works and every number is there and printed: timings are never asserted.
"""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks.harness import Result
from benchmarks.run import cells
from benchmarks.workloads_listings import FILTERS
from tests.conftest import skip_or_fail
from tests.pg_server import postgres_unavailable

REPO = Path(__file__).resolve().parent.parent

# Rows without a database, then the rows every backend has, by the ids the benchmark writes
# (quick sizes); PostgreSQL has a few more.
NO_DATABASE_IDS = {"help", "run_shell"}
BACKEND_IDS = {
    "in_process",  # one-op run in process, with storage
    "seed_backlog_cli",  # 1,000 runs, the seed's sensor, one `sensor tick`
    "seed_backlog_in_process",
    "failure_backlog",  # 10,000 failures, a sensor returning None, one tick
    "idle_tick_1000",  # a tick with nothing new, small and big database
    "idle_tick_100000",
    "idle_check",
    *(  # one tick over a big backlog: rate, cost per reaction, tick row, memory
        f"tick_{what}_{kind}"
        for what in ("rate", "cost", "row", "memory")
        for kind in ("none", "request")
    ),
    "tick_cost_none_1000",  # the same at 1,000 events, and how the cost grows from there
    "tick_cost_request_1000",
    "tick_growth_none",
    "tick_growth_request",
    "scoped_check",  # a sensor scoped away from every event behind it: per-pass check, daemon
    "scoped_check_first",
    "scoped_daemon_cpu",
    "reaction_latency_p50",  # daemon: run end -> reaction stored, with wake-ups
    "reaction_latency_p95",
    "reaction_latency_p99",
    *(  # daemon: run end -> requested run SUCCESS, warm and cold workers
        f"requested_run_latency_{stat}" for stat in ("warm_p50", "warm_p95", "warm_p99", "cold_p95")
    ),
    *(  # daemon: trivial queued runs per second, by max_concurrent_runs
        f"run_throughput_{mode}_{slots}"
        for mode, slots in (
            ("warm", 1),
            ("warm", 2),
            ("warm", 4),
            ("warm", 8),
            ("cold", 1),
            ("cold", 4),
        )
    ),
    "daemon_idle_rss",  # daemon idle: memory and CPU
    "daemon_idle_cpu",
    "sensor_list",  # sensor list with a sensor far behind, and its capped count
    "sensor_lag",
    "runs_list",  # runs list: the slowest filter set, then each one
    *(f"runs_list_{name}" for name in FILTERS),
}
POSTGRES_ONLY_IDS = {
    "daemon_idle_server_cpu",  # the idle daemon's server processes
    "scoped_daemon_server_cpu",
    "drain_reactions",  # three daemons drain a run-requesting sensor
    "drain_runs",
    "drain_runs_per_s",
}


def ids(backend: str) -> set[str]:
    extra = POSTGRES_ONLY_IDS if backend == "postgres" else set()
    return {f"{backend}.{key}" for key in BACKEND_IDS | extra}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    out = tmp_path_factory.mktemp("bench") / "results.json"
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "run.py"), "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=900,  # a hang guard only; the quick run takes about 90 s on a quiet machine
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(out.read_text()), done.stdout


def printed(result: dict[str, Any], stdout: str) -> bool:
    fields = {f.name for f in dataclasses.fields(Result)}
    row = cells(Result(**{k: v for k, v in result.items() if k in fields}))
    return row[3] in stdout  # the result cell ("median 0.12 s") is never wrapped


@pytest.mark.slow
def test_quick_benchmarks_report_every_sqlite_workload(quick_run):
    document, stdout = quick_run
    environment = document["environment"]
    assert environment["cores"] >= 1
    assert environment["mode"] == "quick"
    for key in ("python", "sqlite", "runsense", "load_before", "load_after"):
        assert environment[key]
    assert document["errors"] == []

    results = {r["id"]: r for r in document["results"]}
    assert NO_DATABASE_IDS | ids("sqlite") <= set(results)
    unexpected = set(results) - NO_DATABASE_IDS - ids("sqlite") - ids("postgres")
    assert not unexpected
    for result in results.values():
        value = result["value"]
        assert isinstance(value, (int, float)) and not isinstance(value, bool), result
        assert not math.isnan(value) and value >= 0, result
        assert isinstance(result["target"], (int, float)) and isinstance(result["met"], bool)
        assert result["role"] in ("target", "info")
        assert result["better"] in ("lower", "higher")
        assert printed(result, stdout), f"{result['id']} is not in the printed table"


@pytest.mark.slow
@pytest.mark.postgres
def test_quick_benchmarks_report_every_postgres_workload(quick_run):
    reason = postgres_unavailable()
    if reason is not None:  # skipped, or a failure where PostgreSQL is required (CI)
        skip_or_fail(f"the benchmark ran on SQLite only: {reason}")
    document, stdout = quick_run
    assert document["environment"]["backends"] == ["sqlite", "postgres"]
    assert document["environment"]["postgres"]
    results = {r["id"]: r for r in document["results"]}
    assert ids("postgres") <= set(results)
    for key in ids("postgres"):
        assert printed(results[key], stdout), f"{key} is not in the printed table"
