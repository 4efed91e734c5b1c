"""Real runsense processes for end-to-end tests: the CLI, the daemon, and waiting on the DB."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RUNSENSE = [sys.executable, "-m", "runsense_cli"]


def env_for(home: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "RUNSENSE_HOME": str(home), "PYTHONUNBUFFERED": "1", **extra}


def cli(home: Path, project: Path, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*RUNSENSE, "-f", str(project), *args],
        env=env_for(home),
        capture_output=True,
        text=True,
        timeout=60,
        **kwargs,
    )


def start_daemon(home: Path, project: Path, log: Path, *args: str) -> subprocess.Popen[bytes]:
    handle = open(log, "wb")  # noqa: SIM115 - lives as long as the daemon
    return subprocess.Popen(
        [*RUNSENSE, "-f", str(project), "daemon", *args],
        env=env_for(home),
        stdout=handle,
        stderr=subprocess.STDOUT,
    )


def query(home: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    connection = sqlite3.connect(home / "runsense.db", timeout=30)
    try:
        return connection.execute(sql, params).fetchall()
    finally:
        connection.close()


def wait_until(predicate: Callable[[], Any], timeout: float = 20.0, every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"condition not met within {timeout}s")


def wait_for_log(log: Path, text: str, timeout: float = 20.0) -> None:
    wait_until(lambda: log.exists() and text in log.read_text(errors="replace"), timeout)
