"""Who a process is, in a way that survives pid reuse and other machines (SPEC §10, guarantee 6).

A daemon, launcher or run worker is known by `node/pid/start`: the node name (`RUNSENSE_NODE`,
default the host name), its pid, and the kernel's start time of that pid (clock ticks since boot,
from `/proc`). A pid that was reused by a later process has another start time, so it does not
keep a dead run "alive". On the process's own node liveness is checked at once; elsewhere only a
heartbeat older than the timeout can say it is gone.
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


@dataclass(frozen=True)
class ProcessId:
    node: str
    pid: int
    start: str = ""

    def __str__(self) -> str:
        return f"{self.node}/{self.pid}/{self.start}"

    @classmethod
    def parse(cls, text: str | None) -> ProcessId | None:
        if not text:
            return None
        node, _, rest = text.rpartition("/")
        node, _, pid = node.rpartition("/")
        try:
            return cls(node, int(pid), rest)
        except ValueError:
            return None

    @classmethod
    def of(cls, pid: int | None = None) -> ProcessId:
        pid = os.getpid() if pid is None else pid
        return cls(node_name(), pid, process_start(pid))

    @property
    def local(self) -> bool:
        return self.node == node_name()

    def alive(self) -> bool | None:
        """True or False on this process's own node; None elsewhere (ask its heartbeat)."""
        if not self.local:
            return None
        if not pid_alive(self.pid):
            return False
        return not self.start or process_start(self.pid) in ("", self.start)


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
