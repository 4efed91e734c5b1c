"""`runsense status`: is anything watching? Daemons, sensors and runs in one report (SPEC §12).

A daemon is alive while its heartbeat (database clock) is younger than `heartbeat_timeout`; its
code is current when the fingerprint of the project files it loaded equals the files' now.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .records import SensorStatus
from .runs import IN_PROGRESS_STATUSES, RunRecord, RunStatus
from .storage import Storage

_SKIP_DIRS = {"__pycache__", "node_modules", "site-packages", ".git", ".venv", "venv"}
_MAX_FILES = 5000  # a project directory that is a whole home dir must not make this slow


def code_fingerprint(directory: str | os.PathLike[str]) -> str:
    """A short hash of the project's Python files (paths, sizes, modification times): it
    changes when a file is added, edited or removed. Stat calls only, no reading."""
    digest = hashlib.sha1()
    count = 0
    for root, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not d.startswith("."))
        for name in sorted(files):
            if not name.endswith(".py"):
                continue
            path = os.path.join(root, name)
            try:
                stat = os.stat(path)
            except OSError:
                continue
            digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
            count += 1
            if count >= _MAX_FILES:
                return digest.hexdigest()[:16]
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class DaemonState:
    node: str
    pid: int
    started_at: float
    heartbeat_at: float
    alive: bool
    location: str | None
    code_current: bool | None  # None: another project's daemon, or an older one that never said
    reload_error: str | None


@dataclass(frozen=True)
class SensorHealth:
    name: str
    status: str
    run_status: str
    lag: int
    failed: int  # reactions retrying or parked


@dataclass
class StatusReport:
    daemons: list[DaemonState]
    sensors: list[SensorHealth]
    queued: list[RunRecord] = field(default_factory=list)
    in_progress: list[RunRecord] = field(default_factory=list)

    @property
    def daemon_alive(self) -> bool:
        return any(d.alive for d in self.daemons)

    @property
    def healthy(self) -> bool:
        """False when sensors are RUNNING but no daemon is alive to tick them."""
        running = any(s.status == SensorStatus.RUNNING.value for s in self.sensors)
        return self.daemon_alive or not running


def daemon_states(
    storage: Storage, heartbeat_timeout: float, location: str | None = None, code: str = ""
) -> list[DaemonState]:
    records = storage.list_daemons()
    now = storage.db_time() if records else 0.0
    states = []
    for record in records:
        info: dict[str, Any] = record.info or {}
        same_project = location is not None and info.get("location") == location
        current = (info.get("code") == code) if same_project and info.get("code") else None
        states.append(
            DaemonState(
                node=record.node,
                pid=record.pid,
                started_at=record.started_at,
                heartbeat_at=record.heartbeat_at,
                alive=now - record.heartbeat_at < heartbeat_timeout,
                location=info.get("location"),
                code_current=current,
                reload_error=info.get("reload_error"),
            )
        )
    return states


def no_daemon_alive(storage: Storage, heartbeat_timeout: float) -> bool:
    return not any(d.alive for d in daemon_states(storage, heartbeat_timeout))


def status_report(
    storage: Storage, heartbeat_timeout: float, evaluator: Any = None
) -> StatusReport:
    """The whole picture for this database; with the project's SensorEvaluator, its sensors too
    (without one, say when the project does not import, the daemons and runs only)."""
    directory = (evaluator.origin or {}).get("directory") if evaluator else None
    code = code_fingerprint(directory) if directory else ""
    sensors = []
    for sensor in evaluator.definitions.sensors.values() if evaluator else ():
        state = evaluator.state(sensor)
        running = state.status == SensorStatus.RUNNING
        sensors.append(
            SensorHealth(
                name=sensor.name,
                status=state.status.value,
                run_status=", ".join(t.value for t in sensor.event_types),
                lag=evaluator.lag(sensor, state) if running else 0,
                failed=len(storage.failed_reactions([state.sensor_id])),
            )
        )
    return StatusReport(
        daemons=daemon_states(
            storage, heartbeat_timeout, evaluator.location if evaluator else None, code
        ),
        sensors=sensors,
        queued=storage.runs_with_status([RunStatus.QUEUED], limit=50),
        in_progress=storage.runs_with_status(IN_PROGRESS_STATUSES, limit=50),
    )


def project_directory(origin: dict[str, Any] | None) -> Path | None:
    return Path(origin["directory"]) if origin and origin.get("directory") else None
