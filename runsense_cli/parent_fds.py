"""Descriptors that belong to this process alone: every process forked from it closes them first.

The daemon forks tick processes and run workers. A copy of the daemon's flock would let a child
outliving a killed daemon refuse its restart; a copy of a tick process's command pipe would keep
that tick process from ever seeing the end of its commands. So those are registered here, and one
at-fork hook closes them in every child.
"""

from __future__ import annotations

import contextlib
import os

_FDS: set[int] = set()


def keep_from_children(*fds: int) -> None:
    _FDS.update(fd for fd in fds if fd >= 0)


def forget(fd: int) -> None:
    """Call before closing `fd` here: the number may be reused for something children need."""
    _FDS.discard(fd)


def _close_in_child() -> None:
    for fd in _FDS:
        with contextlib.suppress(OSError):
            os.close(fd)
    _FDS.clear()


os.register_at_fork(after_in_child=_close_in_child)
