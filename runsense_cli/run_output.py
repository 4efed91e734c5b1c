"""A run worker's output (`<home>/logs/<run_id>.log`) and its event log, merged in time order.

The worker stamps every line its Python code prints with the time (`<ISO time>\\t<text>`), so
`runsense runs logs` can interleave the file with the events; lines written past Python (a child
process, C code) have no stamp and take the time of the line before them.
"""

from __future__ import annotations

import io
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

from .runs import RunEvent

_STAMPED = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3,6}Z)\t(.*)$")


def log_path(home: Path, run_id: str) -> Path:
    return home / "logs" / f"{run_id}.log"


def _iso(ts: float) -> str:
    return (
        datetime.fromtimestamp(ts, timezone.utc)
        .isoformat(timespec="microseconds")  # events are that fine: a print right after
        # RUN_START must not sort before it
        .replace("+00:00", "Z")
    )


class _StampingWriter(io.TextIOBase):
    """Prefixes each complete line with the time it was written."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.partial = ""

    def write(self, text: str) -> int:
        lines = (self.partial + text).split("\n")
        self.partial = lines.pop()
        if lines:
            now = _iso(time.time())
            self.stream.write("".join(f"{now}\t{line}\n" for line in lines))
            self.stream.flush()
        return len(text)

    def flush(self) -> None:
        if self.partial:
            self.write("\n")
        self.stream.flush()

    def fileno(self) -> int:
        return self.stream.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.stream, "encoding", "utf-8")


def stamp_output() -> None:
    """In a run worker: stamp what Python code prints (stdout and stderr share the log file)."""
    sys.stdout = _StampingWriter(sys.stdout)  # type: ignore[assignment]
    sys.stderr = _StampingWriter(sys.stderr)  # type: ignore[assignment]


@dataclass(frozen=True)
class LogLine:
    """One line of `runs logs`: an event of the run, or a line of its worker's output."""

    timestamp: float
    source: str  # "event" or "output"
    text: str
    event: RunEvent | None = None


class OutputReader:
    """Reads a worker's log file incrementally (for `--follow`): complete lines only."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.last_time = 0.0

    def read(self) -> list[LogLine]:
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self.offset)
                data = handle.read()
        except OSError:
            return []
        end = data.rfind(b"\n")
        if end < 0:
            return []
        self.offset += end + 1
        lines = []
        for raw in data[: end + 1].decode("utf-8", errors="replace").splitlines():
            match = _STAMPED.match(raw)
            if match:
                self.last_time = _parse(match.group(1))
                raw = match.group(2)
            lines.append(LogLine(self.last_time, "output", raw))
        return lines


def _parse(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp()


def merged(events: list[RunEvent], output: list[LogLine]) -> list[LogLine]:
    """Events and output lines in time order (stable: events first at equal times)."""
    lines = [LogLine(e.timestamp, "event", e.message, e) for e in events]
    return sorted([*lines, *output], key=lambda line: line.timestamp)


def follow(storage: Any, home: Path, run_id: str, poll: float = 0.2) -> Iterator[LogLine]:
    """Every line of a run in time order, then new ones as they come, until the run has ended
    (its terminal event and the output written before it)."""
    reader = OutputReader(log_path(home, run_id))
    seen = 0
    while True:
        finished = storage.get_run(run_id).is_finished
        events = [e for e in storage.events_for_run(run_id) if e.event_id > seen]
        if events:
            seen = events[-1].event_id
        yield from merged(events, reader.read())
        if finished:
            return
        storage.wait_for_change(poll)  # status events wake it at once; output is polled
