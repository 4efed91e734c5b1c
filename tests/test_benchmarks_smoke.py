"""The benchmark command runs end to end and reports every workload (numbers are not asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_quick_benchmarks_report_every_workload(tmp_path):
    out = tmp_path / "results.json"
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "run.py"), "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr
    document = json.loads(out.read_text())
    assert document["environment"]["cores"] >= 1
    workloads = {r["workload"] for r in document["results"]}
    for expected in (
        "runsense --help (cold start)",
        "a tick with nothing new",
        "daemon idle: resident memory",
    ):
        assert expected in workloads
    assert len(document["results"]) == 12
    assert all(isinstance(r["value"], float) and r["value"] >= 0 for r in document["results"])
