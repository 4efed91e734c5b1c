"""Wake-ups between processes on one host, for SQLite (PostgreSQL has LISTEN/NOTIFY).

A process that waits binds a Linux abstract-namespace datagram socket and leaves an empty file
named after it in `<home>/wake/`; a process that commits something worth waking for sends one
byte to each socket listed there. It costs a directory listing and a `sendto` per commit, nothing
while idle, and wakes the waiter in well under a millisecond. Abstract sockets have no path-length
limit problem and vanish with their process; a listing entry whose socket is gone is removed by
the next sender. Elsewhere (macOS) waiting is just the timed pass.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

SUPPORTED = sys.platform.startswith("linux")
_sender: socket.socket | None = None


def _address(name: str) -> str:
    return f"\0runsense-wake-{name}"


class WakeListener:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.name = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self.sock: socket.socket | None = None
        if not SUPPORTED:
            return
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            directory.mkdir(mode=0o700, exist_ok=True)
            sock.bind(_address(self.name))
            sock.setblocking(False)
            (directory / self.name).touch(mode=0o600)
        except OSError:
            sock.close()  # something else sits at <home>/wake: waiting is the timed pass only
            return
        self.sock = sock

    def wait(self, timeout: float, also: Sequence[int] = ()) -> bool:
        if self.sock is None:
            return wait_readable(also, timeout)
        try:
            ready, _, _ = select.select([self.sock, *also], [], [], max(0.0, timeout))
        except InterruptedError:
            return True
        if not ready:
            return False
        if self.sock not in ready:
            return True
        with contextlib.suppress(BlockingIOError):
            while True:  # one wake-up for everything pending
                self.sock.recv(16)
        return True

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
            with contextlib.suppress(OSError):
                (self.directory / self.name).unlink()


def wait_readable(fds: Sequence[int], timeout: float) -> bool:
    """Sleep until one of `fds` is readable or `timeout` passes (no wake-up socket here)."""
    if not fds:
        time.sleep(max(0.0, timeout))
        return False
    try:
        ready, _, _ = select.select(list(fds), [], [], max(0.0, timeout))
    except InterruptedError:
        return True
    return bool(ready)


def poke(directory: Path) -> None:
    """Wake every process waiting on this home; never fails the caller."""
    global _sender
    if not SUPPORTED:
        return
    try:
        names = os.listdir(directory)
    except OSError:
        return
    if _sender is None:
        _sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        _sender.setblocking(False)
    for name in names:
        try:
            _sender.sendto(b"!", _address(name))
        except (BlockingIOError, InterruptedError):
            pass  # its buffer is full: it has a wake-up pending already
        except (ConnectionRefusedError, FileNotFoundError):
            with contextlib.suppress(OSError):
                (directory / name).unlink()  # its process is gone
        except OSError:
            pass
