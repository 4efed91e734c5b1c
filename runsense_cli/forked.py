"""The parent's side of a helper process forked from this one: a pipe of commands to it, a pipe
of frames from it, and a pidfd that is readable once it exits. Tick processes and run servers
are such helpers; each adds what its own protocol needs."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable
from typing import NoReturn

from . import parent_fds
from .frames import FrameReader


class ForkedHelper:
    """Forks `child(commands_fd, results_fd)`, which never returns (it ends with `os._exit`)."""

    def __init__(self, child: Callable[[int, int], NoReturn]) -> None:
        commands_r, commands_w = os.pipe()
        results_r, results_w = os.pipe()
        for stream in (sys.stdout, sys.stderr):  # nothing buffered here is written twice
            with contextlib.suppress(Exception):
                stream.flush()
        try:
            pid = os.fork()
        except BaseException:
            for fd in (commands_r, commands_w, results_r, results_w):
                os.close(fd)
            raise
        if pid == 0:
            os.close(commands_w)
            os.close(results_r)
            child(commands_r, results_w)
        os.close(commands_r)
        os.close(results_w)
        os.set_blocking(results_r, False)
        self.pid, self.commands, self.results = pid, commands_w, FrameReader(results_r)
        self.pidfd = -1
        with contextlib.suppress(AttributeError, OSError):
            self.pidfd = os.pidfd_open(pid)  # readable when it exits (Linux 5.3+)
        # A copy of the command pipe in any other child would keep this one from its EOF.
        parent_fds.keep_from_children(commands_w, results_r, self.pidfd)

    def retire(self) -> None:
        """No more commands: the child ends once it has answered the one in progress."""
        if self.commands >= 0:
            parent_fds.forget(self.commands)
            os.close(self.commands)
            self.commands = -1

    def fds(self) -> list[int]:
        """Readable when the child has something to say or has ended."""
        return [fd for fd in (self.results.fd, self.pidfd) if fd >= 0]

    def close(self) -> None:
        self.retire()
        for fd in (self.results.fd, self.pidfd):
            if fd >= 0:
                parent_fds.forget(fd)
                os.close(fd)
        self.results.fd = self.pidfd = -1
