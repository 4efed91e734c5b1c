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

# Frames behind before the thread works again at once instead of resting a moment.
_LAG_FRAMES = 256
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
                before = None
                while not self._stopping.is_set():
                    _, frames, copied = connection.execute(
                        "PRAGMA wal_checkpoint(PASSIVE)"
                    ).fetchone()
                    # Caught up, or held back by a reader of older frames: rest a moment.
                    if frames - copied < _LAG_FRAMES or (frames, copied) == before:
                        self._stopping.wait(_REST_S)
                    before = (frames, copied)
            finally:
                connection.close()
