"""A thread that copies a big tick's WAL back into the SQLite file while the tick goes on.

A tick over a backlog commits one page of ~1,000 reactions after another. Left to SQLite's
autocheckpoint, the committing connection itself copies the WAL back every so many pages, and
the tick waits meanwhile (a quarter of its commit time at 100k events). This thread checkpoints
on its own connection instead, on the other core, in PASSIVE mode: it never waits for or blocks
the writer or a reader, and copies only what no reader still needs. It also keeps the WAL file
small: once a checkpoint has caught up, the next commit starts the WAL over from its beginning.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading

_REST_S = 0.02


class WalCheckpointer:
    def __init__(self, path: str) -> None:
        self.path = path
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="runsense-checkpoint", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join()

    def _run(self) -> None:
        # Any failure here (the file moved, the disk full) only ends the thread: the writer's own
        # autocheckpoint, given back after the tick, does the rest.
        with contextlib.suppress(sqlite3.Error):
            connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            try:
                # Each pass copies every frame committed so far; a page of a big tick takes tens
                # of milliseconds to commit, so a pass every 20 ms keeps up, and resting between
                # passes keeps this thread from contending with the tick for the GIL.
                while not self._stopping.wait(_REST_S):
                    connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            finally:
                connection.close()
