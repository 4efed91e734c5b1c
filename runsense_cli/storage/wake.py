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
        own = self.sock.fileno()
        ready = readable([own, *also], timeout)
        if not ready:
            return False
        if own not in ready:
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


def readable(fds: Sequence[int], timeout: float) -> set[int]:
    """Which of `fds` are readable (or closed), waiting up to `timeout` seconds for one; poll,
    not select, so a daemon with hundreds of sensors (3 descriptors each) is fine."""
    poller = select.poll()
    for fd in set(fds):
        poller.register(fd, select.POLLIN)
    return {fd for fd, _ in poller.poll(max(0.0, timeout) * 1000)}


def wait_readable(fds: Sequence[int], timeout: float) -> bool:
    """Sleep until one of `fds` is readable or `timeout` passes (no wake-up socket here)."""
    if not fds:
        time.sleep(max(0.0, timeout))
        return False
    return bool(readable(fds, timeout))


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
