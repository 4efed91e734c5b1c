"""Run heartbeats: while a run executes, tell other hosts its worker lives (only where they
watch: PostgreSQL).

One thread per process beats for every run executing in it, on a connection of its own per
database, opened when the first beat is due. A run shorter than the beat interval so costs a dict
entry, not a thread start (a tenth of a one-op run in process). A beat that fails is tried again
a second later, and never fails the run.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time

from .storage import Storage

HEARTBEAT_EVERY_S = 10.0
RETRY_AFTER_S = 1.0  # soon again: a missed beat eats into the others' patience


class Heartbeat:
    """`with Heartbeat(storage, run_id):` beats for the run while the block runs, where the
    storage needs it; a run this process beats for already is not beaten twice."""

    def __init__(self, storage: Storage, run_id: str, every: float = HEARTBEAT_EVERY_S) -> None:
        self.storage = storage
        self.run_id = run_id
        self.every = every
        self.due = 0.0
        self._added = False

    def __enter__(self) -> Heartbeat:
        if self.storage.needs_heartbeats:
            self._added = _beater.add(self)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._added:
            _beater.remove(self)
            self._added = False


class _Beater:
    """The process's heartbeat thread and the runs it beats for."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.beats: dict[str, Heartbeat] = {}
        self.thread: threading.Thread | None = None

    def add(self, beat: Heartbeat) -> bool:
        with self.lock:
            if beat.run_id in self.beats:
                return False
            beat.due = time.monotonic() + beat.every
            self.beats[beat.run_id] = beat
            if self.thread is None:
                self.thread = threading.Thread(
                    target=self._run, name="runsense-heartbeat", daemon=True
                )
                self.thread.start()
            self.changed.notify()  # its interval may be shorter than the thread's wait
        return True

    def remove(self, beat: Heartbeat) -> None:
        with self.lock:
            if self.beats.get(beat.run_id) is beat:
                del self.beats[beat.run_id]

    def _run(self) -> None:
        # Per database (the run's own storage object): that storage and this thread's connection.
        connections: dict[int, tuple[Storage, Storage]] = {}
        while True:
            with self.lock:
                now = time.monotonic()
                due = [beat for beat in self.beats.values() if beat.due <= now]
                if not due:
                    wanted = {id(beat.storage) for beat in self.beats.values()}
                    unused = [connections.pop(key)[1] for key in set(connections) - wanted]
                    if not unused:
                        following = min((beat.due for beat in self.beats.values()), default=0.0)
                        self.changed.wait(following - now if following else None)
                        continue
            if not due:
                for connection in unused:  # no run of that database left: closed, off the lock
                    with contextlib.suppress(Exception):
                        connection.close()
                continue
            for beat in due:
                beat.due = time.monotonic() + self._beat(beat, connections)

    @staticmethod
    def _beat(beat: Heartbeat, connections: dict[int, tuple[Storage, Storage]]) -> float:
        """Beat for one run; seconds until its next beat."""
        try:
            key = id(beat.storage)
            if key not in connections:
                connections[key] = (beat.storage, beat.storage.reopen())
            connections[key][1].heartbeat_runs([beat.run_id])
            return beat.every
        except Exception:
            return RETRY_AFTER_S


_beater = _Beater()


def _fresh_in_child() -> None:
    # A forked child has no heartbeat thread and may have inherited a held lock: start afresh.
    # The parent's connections are left alone (psycopg never closes one from another process).
    global _beater
    _beater = _Beater()


os.register_at_fork(after_in_child=_fresh_in_child)
