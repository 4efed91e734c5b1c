"""Turning runs, events, sensors and ticks into rich tables and JSON documents."""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

    # Annotations only: importing these at start-up costs `runsense --help` ~8 ms (SPEC §8).
    from ..records import Reaction, SensorState, Tick
    from ..runs import RunEvent, RunRecord

STATUS_STYLES = {
    "SUCCESS": "green",
    "FAILURE": "red",
    "CANCELED": "magenta",
    "CANCELING": "magenta",
    "STARTED": "cyan",
    "STARTING": "cyan",
    "QUEUED": "yellow",
    "NOT_STARTED": "dim",
    "RUNNING": "green",
    "STOPPED": "dim",
    "SKIPPED": "yellow",
    "RETRYING": "yellow",
    "DEAD": "red",
}


# Symbols with the plain text that replaces them where the output encoding lacks them
# (PYTHONIOENCODING=ascii, an old terminal): output degrades, it never crashes a run.
MARKS = {
    "start": ("▶", ">"),
    "ok": ("✔", "ok"),
    "fail": ("✘", "x"),
    "arrow": ("→", "->"),
    "more": ("…", "..."),
    "dot": ("·", "-"),
    "at_least": ("≥", ">="),
}


def can_encode(text: str, stream: Any = None) -> bool:
    encoding = getattr(stream or sys.stdout, "encoding", None) or "utf-8"
    try:
        text.encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return False
    return True


def mark(name: str) -> str:
    fancy, plain = MARKS[name]
    return fancy if can_encode(fancy) else plain


def console(stderr: bool = False) -> Console:
    """No emoji codes either: `:fire:` in a log line stays `:fire:` (SPEC §13, user text is shown
    literally); runsense's own markup never uses them."""
    from rich.console import Console

    out = Console(stderr=stderr, highlight=False, soft_wrap=False, emoji=False)
    if not out.is_terminal:
        # Piped: never fold a row (SPEC §13), so `grep` and `wc -l` see one line per row; tables
        # are as wide as their content.
        out.width = PIPE_WIDTH
    return out


PIPE_WIDTH = 100_000


def lit(text: object) -> str:
    """User text (log lines, errors, skip reasons, tags, names) to embed in rich markup: shown
    as it is, never read as markup (`wrote [/data/out.csv]`), invalid UTF-8 as U+FFFD."""
    from rich.markup import escape

    from ..text import safe_str

    return escape(safe_str(text))


def iso(ts: float | None) -> str | None:
    """ISO 8601 in UTC, as every --json document carries times."""
    if ts is None:
        return None
    return (
        datetime.fromtimestamp(ts, timezone.utc)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def local_time(ts: float | None) -> str:
    """Local time, short: just the clock for today, the date too otherwise."""
    if ts is None:
        return "-"
    moment = datetime.fromtimestamp(ts)
    if moment.date() == datetime.now().date():
        return moment.strftime("%H:%M:%S")
    return moment.strftime("%Y-%m-%d %H:%M")


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 120:
        return f"{seconds:.1f}s"
    return f"{seconds / 60:.1f}m"


def age(seconds: float) -> str:
    """A span in human units, two at most: `45s`, `2h 5m`, `3d`, `3d 4h`."""
    seconds = int(max(0.0, seconds))
    if seconds < 60:
        return f"{seconds}s"
    units = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))
    parts = []
    for name, size in units:
        if seconds >= size:
            parts.append(f"{seconds // size}{name}")
            seconds %= size
        if len(parts) == 2 or (parts and name == "d" and seconds < 3600):
            break
    return " ".join(parts[:2])


def ago(ts: float | None) -> str:
    if ts is None:
        return "never"
    return f"{age(time.time() - ts)} ago"


def waiting(lag: int) -> str:
    """A sensor's waiting events as shown: counting stops at LAG_CAP, shown as `≥ 10,000`."""
    from ..storage import LAG_CAP

    return f"{mark('at_least')} {LAG_CAP:,}" if lag >= LAG_CAP else str(lag)


def lag_json(lag: int) -> dict[str, Any]:
    """`lag` in a --json document, and whether counting stopped at the cap (then: at least)."""
    from ..storage import LAG_CAP

    return {"lag": lag, "lag_capped": lag >= LAG_CAP}


def styled(status: str) -> str:
    style = STATUS_STYLES.get(status)
    return f"[{style}]{status}[/{style}]" if style else status


def print_json(document: Any) -> None:
    try:
        text = json.dumps(document, indent=2, default=str, allow_nan=False)
    except ValueError:  # NaN stored before run config was checked: JSON has no NaN, so null
        text = json.dumps(_finite(document), indent=2, default=str)
    sys.stdout.write(text + "\n")


def _finite(value: Any) -> Any:
    import math

    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def run_json(run: RunRecord) -> dict[str, Any]:
    return {
        "run_id": run.run_id,
        "job_name": run.job_name,
        "status": run.status.value,
        "location": run.location,
        "tags": run.tags,
        "run_config": run.run_config,
        "created_at": iso(run.created_at),
        "start_time": iso(run.start_time),
        "end_time": iso(run.end_time),
        "parent_run_id": run.parent_run_id,
        "root_run_id": run.root_run_id,
    }


def event_json(event: RunEvent) -> dict[str, Any]:
    return {
        "event_id": event.event_id,
        "event_type": event.event_type.value,
        "timestamp": iso(event.timestamp),
        "message": event.message,
        "step_key": event.step_key,
        "level": event.level,
        "error": event.error.stack if event.error else None,
    }


def tick_json(tick: Tick) -> dict[str, Any]:
    return {
        "tick_id": tick.tick_id,
        "sensor": tick.sensor,
        "status": tick.status.value,
        "started_at": iso(tick.started_at),
        "duration_s": round(tick.duration_s, 6),
        "events_scanned": tick.events_scanned,
        "reactions": tick.reactions,
        "runs_requested": tick.runs_requested,
        "skipped": tick.skipped,
        "failures": tick.failures,
        # The first 100 runs requested, distinct skip reasons and errors: the counts above say
        # how many there were in all.
        "run_ids": tick.run_ids,
        "skip_reasons": tick.skip_reasons,
        "errors": tick.errors,
        "cursor_before": tick.cursor_before,
        "cursor_after": tick.cursor_after,
        "logs": tick.logs,
    }


def failure_json(reaction: Reaction) -> dict[str, Any]:
    return {
        "sensor": reaction.sensor,
        "event_id": reaction.event_id,
        "run_id": reaction.run_id,
        "attempts": reaction.attempts,
        "state": reaction.state.value,
        "next_attempt_at": iso(reaction.next_attempt_at),
        "error": reaction.error,
    }


def reaction_json(reaction: Reaction) -> dict[str, Any]:
    """One sensor's reaction to one status event of a run (`runs show --json`)."""
    return {
        "sensor": reaction.sensor,
        "event_id": reaction.event_id,
        "state": reaction.state.value,
        "attempts": reaction.attempts,
        "next_attempt_at": iso(reaction.next_attempt_at),
        "error": reaction.error,
        "skip_message": reaction.skip_message,
        "run_ids": reaction.run_ids,
        "created_at": iso(reaction.created_at),
        "finished_at": iso(reaction.finished_at),
    }


def last_line(text: str | None) -> str:
    """The line of a traceback that says what went wrong: its last one."""
    lines = (text or "").strip().splitlines()
    return lines[-1] if lines else ""


def reactions_table(reactions: list[Reaction]) -> Any:
    from rich.table import Table
    from rich.text import Text

    table = Table(header_style="bold")
    for column in ("sensor", "event", "outcome", "attempts", "next attempt"):
        table.add_column(column, no_wrap=True)
    table.add_column("detail", overflow="fold")
    for r in reactions:
        if r.error:
            detail = last_line(r.error)
        elif r.skip_message:
            detail = r.skip_message
        elif r.run_ids:
            detail = "requested " + ", ".join(run_id[:8] for run_id in r.run_ids)
        else:
            detail = ""
        table.add_row(
            Text(r.sensor),
            str(r.event_id),
            styled(r.state.value),
            str(r.attempts),
            local_time(r.next_attempt_at) if r.next_attempt_at else "-",
            Text(detail),
        )
    return table


def sensor_json(
    state: SensorState, run_status: str, lag: int, last_tick: Tick | None, monitored: list[str]
) -> dict[str, Any]:
    return {
        "name": state.name,
        "location": state.location,
        "run_status": run_status,
        "status": state.status.value,
        "cursor": state.cursor,
        **lag_json(lag),
        "monitored_jobs": monitored,
        "last_tick": tick_json(last_tick) if last_tick else None,
    }


def keep_whole(table: Any, columns: list[int], flexible: int | list[int] | None = None) -> Any:
    """Columns of ids, names, statuses and times get their content's width, and the `flexible`
    free-text columns share what is left of the terminal, cut with … (SPEC §13: on a terminal
    ids, names, statuses and times never fold; piped, nothing is cut at all)."""
    from rich.text import Text

    fixed = 0
    for index in columns:
        column = table.columns[index]
        cells = [Text.from_markup(c) if isinstance(c, str) else c for c in column._cells]
        widths = [Text.from_markup(str(column.header)).cell_len, *(c.cell_len for c in cells)]
        column.min_width = column.width = max(widths)
        column.no_wrap = True
        fixed += column.width
    flexible = [flexible] if isinstance(flexible, int) else list(flexible or [])
    if flexible:
        # Each column has one space of padding on each side, and there is a border between
        # every two columns and at both ends.
        room = console().width - fixed - 3 * len(table.columns) - 1
        share = max(3, room // len(flexible))
        for index in flexible:
            column = table.columns[index]
            column.no_wrap, column.overflow = True, "ellipsis"
            column.max_width = share
    return table


RUNS_HEADERS = ("run id", "job", "status", "start", "duration", "trigger")


def runs_cells(run: RunRecord) -> tuple[str, ...]:
    """A run's row of the runs table as plain text (`runs_table` escapes what the user named)."""
    start = local_time(run.start_time or run.created_at)
    return (
        run.run_id[:8],
        run.job_name,
        run.status.value,
        start,
        duration(run.duration),
        run.trigger,
    )


def runs_table(runs: list[RunRecord]) -> Any:
    from rich.table import Table

    table = Table(title=None, header_style="bold")
    # On a terminal, ids, names, statuses and times never fold; the trigger is cut with "…" (its
    # min_width is under its header's width: plain.table_text draws this table on a pipe).
    for header in RUNS_HEADERS[:-1]:
        table.add_column(header, no_wrap=True)
    table.add_column(RUNS_HEADERS[-1], overflow="ellipsis", no_wrap=True, min_width=5)
    for run_id, job, status, start, took, trigger in map(runs_cells, runs):
        table.add_row(run_id, lit(job), styled(status), start, took, lit(trigger))
    return keep_whole(table, [0, 1, 2, 3, 4], flexible=5)


def events_table(events: list[RunEvent]) -> Any:
    from rich.table import Table

    table = Table(header_style="bold")
    for column in ("id", "time", "event", "step"):
        table.add_column(column, no_wrap=True)
    table.add_column("message", overflow="ellipsis", no_wrap=True, min_width=10)
    for event in events:
        table.add_row(
            str(event.event_id),
            datetime.fromtimestamp(event.timestamp).strftime("%H:%M:%S.%f")[:-3],
            styled(event.event_type.value.removeprefix("RUN_"))
            if event.is_status_event
            else event.event_type.value,
            lit(event.step_key or ""),
            lit(event.message),
        )
    return keep_whole(table, [0, 1, 2, 3], flexible=4)


def ticks_table(ticks: list[Tick]) -> Any:
    from rich.table import Table

    table = Table(header_style="bold")
    for column in ("tick", "started", "status", "events", "reactions", "runs", "cursor", "took"):
        table.add_column(column, overflow="fold")
    table.add_column("notes", overflow="fold")
    for t in ticks:
        notes = "; ".join(t.errors[:2] or sorted(set(t.skip_reasons))[:2])
        table.add_row(
            str(t.tick_id),
            local_time(t.started_at),
            styled(t.status.value),
            str(t.events_scanned),
            str(t.reactions),
            str(t.runs_requested),
            f"{t.cursor_before}→{t.cursor_after}",
            duration(t.duration_s),
            lit(notes),
        )
    return keep_whole(table, list(range(8)), flexible=8)


def print_tick_logs(out: Console, ticks: list[Tick]) -> None:
    """What each tick's function logged, under the table: one line per log line (never folded,
    so `grep` finds it), shown literally, never as markup."""
    for t in ticks:
        if t.logs:
            out.print(f"tick {t.tick_id} logged:")
            for line in t.logs:
                out.print(f"  {line}", markup=False, soft_wrap=True)
