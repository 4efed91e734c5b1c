"""Length-prefixed pickles on pipes: how a forked helper (a tick process, a run server) and its
parent talk. Both ends are runsense processes forked from one another, so pickle is safe here."""

from __future__ import annotations

import os
import pickle
import struct
from typing import Any

_LENGTH = struct.Struct("=I")


def send_frame(fd: int, value: Any) -> None:
    data = pickle.dumps(value)
    view = memoryview(_LENGTH.pack(len(data)) + data)
    while view:
        view = view[os.write(fd, view) :]


class FrameReader:
    """Collects frames from a non-blocking pipe as its bytes arrive."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buffer = bytearray()
        self.closed = False

    def read(self) -> list[Any]:
        while not self.closed:
            try:
                chunk = os.read(self.fd, 1 << 16)
            except (BlockingIOError, InterruptedError):
                break
            if not chunk:
                self.closed = True
                break
            self.buffer += chunk
        frames = []
        while len(self.buffer) >= _LENGTH.size:
            (size,) = _LENGTH.unpack_from(self.buffer)
            if len(self.buffer) < _LENGTH.size + size:
                break
            payload = bytes(self.buffer[_LENGTH.size : _LENGTH.size + size])
            del self.buffer[: _LENGTH.size + size]
            try:
                frames.append(pickle.loads(payload))
            except Exception:
                continue  # nothing a well-behaved child sends; the death, if any, is reaped
        return frames


def read_frame(fd: int) -> Any | None:
    """The next frame from a blocking pipe; None at its end (the parent retired this process)."""
    header = _read_exactly(fd, _LENGTH.size)
    if header is None:
        return None
    (size,) = _LENGTH.unpack(header)
    payload = _read_exactly(fd, size)
    return None if payload is None else pickle.loads(payload)


def _read_exactly(fd: int, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = os.read(fd, size - len(data))
        if not chunk:
            return None
        data += chunk
    return data
