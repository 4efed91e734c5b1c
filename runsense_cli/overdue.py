"""Noticing overdue runs (SPEC §11): a daemon pass writes one RUN_OVERDUE per run and phase, for a
run still QUEUED after `runsense/max_queue_time` or in progress after `runsense/max_runtime`
(`dagster/...` read the same way). The run keeps going, unless it is tagged
`runsense/max_runtime_action=cancel` (Dagster's behaviour): then it is cancelled as
`runsense runs cancel` would, once it is marked overdue in progress. The cancel is asked on every
pass while the mark stands and the run is not cancelling yet, so a daemon killed between the mark
and the cancel never loses it."""

from __future__ import annotations

from . import alert_tags
from .runs import RunRecord, RunStatus
from .storage import Storage

WATCHED = (RunStatus.QUEUED, RunStatus.STARTING, RunStatus.STARTED)


def _limit(run: RunRecord) -> tuple[str, float, float] | None:
    """(phase, limit, since) for a run that has a limit in its current phase."""
    if run.status == RunStatus.QUEUED:
        limit = alert_tags.max_queue_time(run.tags)
        return ("QUEUED", limit, run.created_at) if limit is not None else None
    limit = alert_tags.max_runtime(run.tags)
    if limit is None:
        return None
    return "STARTED", limit, run.start_time or run.created_at


def mark_overdue_runs(storage: Storage, now: float) -> list[str]:
    """Write the RUN_OVERDUE events now due; returns the ids of the runs marked. It reads only
    unfinished runs that have a limit: none, usually, however many runs are queued."""
    due = []
    for run in storage.runs_with_limits(WATCHED):
        found = _limit(run)
        if found is not None and now - found[2] >= found[1]:
            due.append((run, found))
    if not due:
        return []
    done = storage.overdue_phases(run.run_id for run, _ in due)
    marked = []
    for run, (phase, limit, _since) in due:
        if (run.run_id, phase) not in done:
            if storage.record_overdue(run.run_id, phase, limit, now=now) is None:
                continue
            marked.append(run.run_id)
        if phase == "STARTED" and _cancels(run):
            from .cancel import request_cancel

            request_cancel(storage, run)
    return marked


def _cancels(run: RunRecord) -> bool:
    action = run.tags.get(alert_tags.MAX_RUNTIME_ACTION) or run.tags.get(
        "dagster/max_runtime_action"
    )
    return (action or "").strip().lower() == "cancel"
