"""Who a process is, in a way that survives pid reuse and other machines (SPEC §10, guarantee 6).

A daemon, launcher or run worker is known by `node/pid/start/space`: the node name
(`RUNSENSE_NODE`, default the host name), its pid, the kernel's start time of that pid (clock
ticks since boot, from `/proc`), and the pid space it lives in (boot id and pid namespace). A pid
reused by a later process has another start time, so it does not keep a dead run "alive"; a
container that shares the host's name but not its pids has another space, so it is judged like a
remote machine. Liveness is checked at once in our own pid space; elsewhere only a heartbeat
older than the timeout can say a process is gone.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from functools import cache


@cache
def node_name() -> str:
    return os.environ.get("RUNSENSE_NODE") or socket.gethostname() or "localhost"


def process_start(pid: int) -> str:
    """The kernel's start time of `pid` ("" where /proc is missing, as on macOS)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return ""
    # Field 22 of stat is starttime; after the ")" the fields start at number 3.
    return fields[19].decode() if len(fields) > 19 else ""


@cache
def pid_space() -> str:
    """This boot and pid namespace: pids mean the same process only within one of these."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as handle:
            boot = handle.read().strip()
    except OSError:
        boot = ""
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = ""
    return f"{boot[:8]}:{namespace.strip('pid:[]')}" if boot or namespace else ""


@dataclass(frozen=True)
class ProcessId:
    node: str
    pid: int
    start: str = ""
    space: str = ""

    def __str__(self) -> str:
        return f"{self.node}/{self.pid}/{self.start}/{self.space}"

    @classmethod
    def parse(cls, text: str | None) -> ProcessId | None:
        if not text:
            return None
        parts = text.rsplit("/", 3)
        try:
            if len(parts) == 4:
                return cls(parts[0], int(parts[1]), parts[2], parts[3])
            if len(parts) == 3:  # written before identities had a pid space
                return cls(parts[0], int(parts[1]), parts[2])
        except ValueError:
            pass
        return None

    @classmethod
    def of(cls, pid: int | None = None) -> ProcessId:
        """A process of this pid space (ours, or a child we just started)."""
        pid = os.getpid() if pid is None else pid
        return cls(node_name(), pid, process_start(pid), pid_space())

    @property
    def local(self) -> bool:
        return self.node == node_name() and (not self.space or self.space == pid_space())

    def alive(self) -> bool | None:
        """True or False on this process's own node; None elsewhere (ask its heartbeat)."""
        if not self.local:
            return None
        if not pid_alive(self.pid):
            return False
        return not self.start or process_start(self.pid) in ("", self.start)


def pid_of(identity: str | None) -> int | None:
    """The pid in a stored identity string (for display and the legacy `worker_pid` column)."""
    parsed = ProcessId.parse(identity)
    return parsed.pid if parsed else None


def current() -> ProcessId:
    return ProcessId.of()


def pid_alive(pid: int | None) -> bool:
    """True while a process with this pid runs (ours or another user's).

    A zombie counts as dead: an adopted worker or a killed `sensor tick` stays one until init
    reaps it, which some inits do late and a container without an init never does.
    """
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True  # no /proc (macOS): kill(pid, 0) is all there is


def node_of(identity: str | None) -> str | None:
    """The node a process identity names (None: not an identity)."""
    parsed = ProcessId.parse(identity)
    return parsed.node if parsed else None
