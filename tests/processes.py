"""Real runsense processes for end-to-end tests: the CLI, the daemon, and waiting on the DB."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RUNSENSE = [sys.executable, "-m", "runsense_cli"]
# The console script pip installed next to this interpreter (what a user types), when present.
_SCRIPT = Path(sys.executable).with_name("runsense")
RUNSENSE_SCRIPT = [str(_SCRIPT)] if _SCRIPT.exists() else RUNSENSE


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


def start_daemon(
    home: Path,
    project: Path,
    log: Path,
    *args: str,
    command: list[str] | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """`runsense -f PROJECT daemon ARGS` with stdout and stderr appended to `log` (not a TTY);
    `cwd` is where it looks for its settings file."""
    handle = open(log, "ab")  # noqa: SIM115 - the child holds its own copy of the descriptor
    try:
        return subprocess.Popen(
            [*(command or RUNSENSE), "-f", str(project), "daemon", *args],
            cwd=cwd,
            env=env_for(home),
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    finally:
        handle.close()


def stop(process: subprocess.Popen[Any]) -> None:
    """Make sure a process this test started is gone (SIGKILL), and reap it."""
    if process.poll() is None:
        process.kill()
    process.wait()


def kill_workers_in_progress(home: Path) -> None:
    """Run workers of runs still in progress would outlive the test: SIGKILL exactly those."""
    if not (home / "runsense.db").exists():
        return
    rows = query(
        home,
        "SELECT worker_pid FROM runs WHERE status IN ('STARTING', 'STARTED', 'CANCELING')"
        " AND worker_pid IS NOT NULL AND worker_pid != ?",
        os.getpid(),
    )
    for (pid,) in rows:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def query(home: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    connection = sqlite3.connect(home / "runsense.db", timeout=30)
    try:
        return connection.execute(sql, params).fetchall()
    finally:
        connection.close()


def wait_until(
    predicate: Callable[[], Any], timeout: float = 20.0, every: float = 0.05, what: str = ""
) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"condition not met within {timeout}s{': ' + what if what else ''}")


def wait_for_log(log: Path, text: str, timeout: float = 20.0, count: int = 1) -> None:
    """Wait until `text` appears `count` times in `log` (several daemon lives share one log)."""
    wait_until(
        lambda: log.exists() and log.read_text(errors="replace").count(text) >= count,
        timeout,
        what=f"{text!r} x{count} in {log.name}",
    )


def pid_running(pid: int) -> bool:
    """True while `pid` exists and is not a zombie (a killed process its parent has not reaped)."""
    if os.path.isdir("/proc/self"):
        try:
            with open(f"/proc/{pid}/stat") as handle:
                return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
        except (FileNotFoundError, ProcessLookupError):
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
