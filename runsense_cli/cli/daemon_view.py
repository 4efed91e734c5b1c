"""How the daemon shows itself: a rich live view on a terminal, one log line per event otherwise."""

from __future__ import annotations

import sys
import time
from collections import deque
from typing import Any

from ..evaluation import SensorEvaluator, TickResult
from ..launcher import DeadRun
from ..records import SensorStatus
from ..runs import IN_PROGRESS_STATUSES, RunRecord, RunStatus
from ..storage import PruneResult
from ..text import clean
from . import render


def make_reporter(evaluator: SensorEvaluator) -> Any:
    """The live view on a terminal that can redraw; log lines elsewhere (a pipe, TERM=dumb)."""
    import os

    if sys.stdout.isatty() and os.environ.get("TERM", "") != "dumb":
        return LiveReporter(evaluator)
    return LogReporter()


def _stamp() -> str:
    """ISO 8601 local time with its offset: sortable, and unambiguous across machines."""
    from datetime import datetime

    return datetime.now().astimezone().isoformat(timespec="milliseconds")


def _ended_line(run: RunRecord) -> str:
    took = render.duration(run.duration)
    return f"run {run.run_id} {run.status.value} ({run.job_name}, {took})"


def _reloaded_line(evaluator: SensorEvaluator) -> str:
    names = ", ".join(sorted(evaluator.definitions.sensors)) or "none"
    return f"project reloaded; sensors: {names}"


def _pruned_line(result: PruneResult) -> str:
    return (
        f"pruned {len(result.run_ids)} run(s), {result.events} event(s), {result.ticks} tick(s),"
        f" {result.reactions} reaction(s)"
    )


def _tick_line(result: TickResult) -> str:
    t = result.tick
    line = (
        f"tick {result.sensor}: {t.status.value} events={t.events_scanned} reactions={t.reactions}"
        f" runs_requested={t.runs_requested} cursor={t.cursor_before}->{t.cursor_after}"
        f" took={t.duration_s * 1000:.1f}ms"
    )
    if t.failures:
        line += f" errors={t.failures} first_error={t.errors[0]!r}"
    return line


class LogReporter:
    """Plain lines on stdout, flushed at once so a log collector sees them as they happen."""

    def _emit(self, text: str) -> None:
        sys.stdout.write(f"{_stamp()} {text}\n")
        sys.stdout.flush()

    def started(self, pid: int, sensors: list[str]) -> None:
        self._emit(f"daemon started (pid {pid}); sensors: {', '.join(sensors) or 'none'}")

    def tick(self, result: TickResult) -> None:
        self._emit(_tick_line(result))
        for reaction, run in result.parked:  # parked: needs a person (`sensor retry`)
            last = (reaction.error or "").strip().splitlines()[-1:] or [""]
            self._emit(
                f"parked: {result.sensor} on run {run.run_id} (event {reaction.event_id},"
                f" {reaction.attempts} attempt(s)): {clean(last[0])}"
            )
        if result.parked_count > len(result.parked):
            more = result.parked_count - len(result.parked)
            self._emit(f"parked: {result.sensor}: {more} more (runsense sensor failures)")

    def launched(self, run_ids: list[str]) -> None:
        for run_id in run_ids:
            self._emit(f"run {run_id} launched")

    def dead(self, dead: DeadRun) -> None:
        self._emit(f"run {dead.run.run_id} {dead.run.status.value}: {dead.reason}")

    def run_ended(self, run: RunRecord) -> None:
        self._emit(_ended_line(run))

    def pruned(self, result: PruneResult) -> None:
        self._emit(_pruned_line(result))

    def reloaded(self, evaluator: SensorEvaluator) -> None:
        self._emit(_reloaded_line(evaluator))

    def error(self, message: str) -> None:
        self._emit(f"error: {message}")

    def idle(self) -> None:
        pass

    def stopping(self) -> None:
        self._emit("daemon stopping; run workers keep running")


class LiveReporter:
    """A live table of sensors (with lag), recent reactions and runs in progress."""

    def __init__(self, evaluator: SensorEvaluator) -> None:
        from rich.live import Live

        self.evaluator = evaluator
        self.recent: deque[str] = deque(maxlen=10)
        # Drawn from the daemon's own thread only (no refresh thread): tick processes are forked
        # from it, and a fork must not catch another thread holding the terminal's lock.
        self.live = Live(console=render.console(), auto_refresh=False, transient=False)
        self._last_draw = 0.0

    def started(self, pid: int, sensors: list[str]) -> None:
        self.pid = pid
        self.live.start()
        self._draw()

    def tick(self, result: TickResult) -> None:
        self.recent.appendleft(f"{time.strftime('%H:%M:%S')} {_tick_line(result)}")

    def launched(self, run_ids: list[str]) -> None:
        for run_id in run_ids:
            self.recent.appendleft(f"{time.strftime('%H:%M:%S')} run {run_id[:8]} launched")

    def dead(self, dead: DeadRun) -> None:
        self.recent.appendleft(
            f"{time.strftime('%H:%M:%S')} run {dead.run.run_id[:8]} {dead.run.status.value}:"
            f" {dead.reason}"
        )

    def run_ended(self, run: RunRecord) -> None:
        self.recent.appendleft(f"{time.strftime('%H:%M:%S')} {_ended_line(run)}")

    def pruned(self, result: PruneResult) -> None:
        self.recent.appendleft(f"{time.strftime('%H:%M:%S')} {_pruned_line(result)}")

    def reloaded(self, evaluator: SensorEvaluator) -> None:
        self.evaluator = evaluator
        self.recent.appendleft(f"{time.strftime('%H:%M:%S')} {_reloaded_line(evaluator)}")

    def error(self, message: str) -> None:
        self.recent.appendleft(f"{time.strftime('%H:%M:%S')} error: {message}")

    def idle(self) -> None:
        if time.monotonic() - self._last_draw >= 0.5:
            self._draw()

    def stopping(self) -> None:
        self._draw()
        self.live.stop()
        render.console().print("daemon stopping; run workers keep running")

    def _draw(self) -> None:
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        self._last_draw = time.monotonic()
        ev = self.evaluator
        sensors = Table(title=f"runsense daemon (pid {self.pid})", header_style="bold", expand=True)
        for column in ("sensor", "watches", "state", "waiting", "last tick"):
            sensors.add_column(column)
        for sensor in ev.definitions.sensors.values():
            state = ev.state(sensor)
            last = ev.storage.last_tick(state.sensor_id)
            running = state.status == SensorStatus.RUNNING
            lag = render.waiting(ev.lag(sensor, state)) if running else "-"
            sensors.add_row(
                render.lit(sensor.name),
                sensor.status_label,
                render.styled(state.status.value),
                lag,
                f"{render.styled(last.status.value)} {render.ago(last.started_at)}"
                if last
                else "never",
            )
        render.keep_whole(sensors, [0, 2, 3, 4], flexible=1)  # only "watches" may be cut
        active = [*ev.storage.runs_with_status(IN_PROGRESS_STATUSES, limit=10)]
        active += ev.storage.runs_with_status([RunStatus.QUEUED], limit=10 - len(active))
        runs = render.runs_table(active) if active else "No runs queued or in progress."
        # Text, not a markup string: tick lines carry user errors (`wrote [/data/out.csv]`).
        # One row per entry, cut with … at the terminal's width: a long error never folds.
        recent = Text(
            clean("\n".join(line.replace("\n", " ") for line in self.recent))
            or "No reactions yet.",
            no_wrap=True,
            overflow="ellipsis",
        )
        self.live.update(
            Group(
                sensors,
                "[bold]Runs in progress and queued[/bold]",
                runs,
                "[bold]Recent[/bold]",
                recent,
            ),
            refresh=True,
        )
