"""Process liveness, shared by tick leases and dead-worker detection."""

from __future__ import annotations

import os


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
