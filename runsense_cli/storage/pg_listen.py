"""PostgreSQL wake-ups: `pg_notify` in the committing transaction (its text names the
transaction's events, see `SqlBase._named_changes`) and LISTEN on a connection of its own, read
without blocking; what the notifications named is kept for `take_changes`."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

from .wake import readable, wait_readable

CHANNEL = "runsense"
HEARD_KEPT = 1000  # events named by wake-ups kept for `take_changes`; beyond: "anything"


class Listening:
    """The wake-up half of `PostgresStorage` (which provides `_connect_once`)."""

    _listen: Any = None
    _heard: set[tuple[str, str, str]] | None = None

    def _connect_once(self) -> Any:
        raise NotImplementedError

    def wait_for_change(self, timeout: float, also: Sequence[int] = ()) -> bool:
        try:
            if self._listen is None:
                self._listen = self._connect_once()
                self._listen.execute(f"LISTEN {CHANNEL}")
                self._heard = None  # what came while nobody listened is unknown
            # What the driver has read already, then wait on the LISTEN socket and the caller's
            # descriptors at once, and read everything that came (each names its events).
            if self._hear():
                return True
            sock = self._listen.fileno()
            ready = readable([sock, *also], timeout)
            if sock in ready:
                self._hear()
            return bool(ready)
        except Exception:
            # LISTEN is best effort (lost while disconnected): fall back to the timed pass.
            if self._listen is not None:
                with contextlib.suppress(Exception):
                    self._listen.close()
            self._listen = None
            self._heard = None
            return wait_readable(also, min(timeout, 1.0))

    def _hear(self) -> bool:
        """Read the notifications waiting (never blocks); whether there were any."""
        heard = False
        for notify in self._listen.notifies(timeout=0):
            heard = True
            if self._heard is None:
                continue
            if notify.payload in ("", "*"):
                self._heard = None
                continue
            for line in notify.payload.split("\n"):
                parts = line.split("\t")
                if len(parts) != 3:
                    self._heard = None
                    break
                self._heard.add((parts[0], parts[1], parts[2]))
            if self._heard is not None and len(self._heard) > HEARD_KEPT:
                self._heard = None  # nobody takes them (`sensor tick` waiting for its runs)
        return heard

    def take_changes(self) -> frozenset[tuple[str, str, str]] | None:
        heard, self._heard = self._heard, set()
        return None if heard is None else frozenset(heard)
