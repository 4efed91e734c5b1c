"""Which events a tick process is calling the user's function for, readable by its parent.

A tick runs in a child process (see `tick_process`); if the user's function ends that process
(`os._exit`, a segfault) or hangs, the parent must know which events were in flight to fail
their reactions. The child writes them into an anonymous shared mapping before each call and
clears it after: no system call per reaction, and the record survives the child's death.
"""

from __future__ import annotations

import mmap
import os
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass

# A call of a sensor function longer than this is taken for a hang: its process is stopped and
# its reaction fails (the `sensor_timeout` setting).
DEFAULT_CALL_TIMEOUT_S = 120.0

_HEADER = struct.Struct("=qdq")  # calling (0/1), call started (monotonic seconds), entries
_ENTRY = struct.Struct("=qq")  # event id, attempt
_CALLING = struct.Struct("=q")
_STARTED_AND_COUNT = struct.Struct("=dq")  # at offset 8


@dataclass(frozen=True)
class CallInFlight:
    started: float  # time.monotonic() of the child (the clock is system-wide)
    calls: list[tuple[int, int]]  # (event id, attempt)


class CallWatch:
    """Shared between a tick process and its parent; created by the parent before the fork."""

    def __init__(self, capacity: int) -> None:
        self.capacity = max(1, capacity)
        self._map = mmap.mmap(-1, _HEADER.size + _ENTRY.size * self.capacity)
        self.owner = 0  # the tick process's pid, set in it

    # The flag is written last and cleared first, so a parent reading mid-update never sees a
    # call in flight with the previous call's start time.
    def calling(self, calls: Sequence[tuple[int, int]]) -> None:
        calls = calls[: self.capacity]
        for index, (event_id, attempt) in enumerate(calls):
            _ENTRY.pack_into(self._map, _HEADER.size + index * _ENTRY.size, event_id, attempt)
        _STARTED_AND_COUNT.pack_into(self._map, 8, time.monotonic(), len(calls))
        _CALLING.pack_into(self._map, 0, 1)

    def calling_one(self, event_id: int, attempt: int) -> None:
        _ENTRY.pack_into(self._map, _HEADER.size, event_id, attempt)
        _STARTED_AND_COUNT.pack_into(self._map, 8, time.monotonic(), 1)
        _CALLING.pack_into(self._map, 0, 1)

    def returned(self) -> None:
        _CALLING.pack_into(self._map, 0, 0)
        if self.owner and os.getpid() != self.owner:
            # The function forked and both processes returned here: the copy must not go on
            # ticking (and reading its parent's commands) beside the real tick process.
            os._exit(0)

    def in_flight(self) -> CallInFlight | None:
        calling, started, count = _HEADER.unpack_from(self._map, 0)
        if not calling:
            return None
        count = min(max(count, 0), self.capacity)
        calls = [
            _ENTRY.unpack_from(self._map, _HEADER.size + index * _ENTRY.size)
            for index in range(count)
        ]
        return CallInFlight(started, calls)

    def close(self) -> None:
        self._map.close()
