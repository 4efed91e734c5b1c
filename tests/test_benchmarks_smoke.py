"""`benchmarks/run.py --quick` runs end to end and reports every SPEC §8 workload.

Only that the command works and every number is there: timings are never asserted here.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# SPEC §8's eight workloads, by the result ids the benchmark writes (quick sizes).
EXPECTED_IDS = {
    "help",  # runsense --help
    "run_shell",  # runsense run of a one-op job, from the shell
    "in_process",  # one-op run in process, with storage
    "seed_backlog_cli",  # 1,000 runs, the seed's sensor, one `sensor tick`
    "seed_backlog_in_process",
    "failure_backlog",  # failures, a sensor returning None, one tick
    "idle_tick_1000",  # a tick with nothing new, small and big database
    "idle_tick_100000",
    "idle_check",
    "daemon_latency_p50",  # daemon: run end -> reaction stored
    "daemon_latency_p95",
    "daemon_idle_rss",  # daemon idle: memory and CPU
    "daemon_idle_cpu",
}


@pytest.mark.slow
def test_quick_benchmarks_report_every_workload(tmp_path):
    out = tmp_path / "results.json"
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "run.py"), "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,  # a hang guard only; the quick run takes about 20 s
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    document = json.loads(out.read_text())

    environment = document["environment"]
    assert environment["cores"] >= 1
    assert environment["mode"] == "quick"
    for key in ("python", "sqlite", "runsense"):
        assert environment[key]
    assert document["errors"] == []

    results = {r["id"]: r for r in document["results"]}
    assert set(results) == EXPECTED_IDS
    for result in results.values():
        value = result["value"]
        assert isinstance(value, (int, float)) and not isinstance(value, bool), result
        assert math.isfinite(value) and value >= 0, result
        assert isinstance(result["target"], (int, float)) and isinstance(result["met"], bool)
        assert result["role"] in ("target", "info")
