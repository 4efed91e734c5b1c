"""Operating runs (SPEC §12): rerun, delete and prune, as library calls the CLI stays thin over.

Removing a run removes its worker's log file too: the database decides which runs may go
(`Storage.delete_runs` / `prune`), then their files follow.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import RunsenseError
from .run_output import log_path
from .runs import FINISHED_STATUSES, RunRecord
from .storage import PruneResult, Storage
from .values import RESERVED_TAG_PREFIX

RERUN_OF_TAG = "runsense/rerun_of"
_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_age(text: str) -> float:
    """`30d`, `12h`, `90m`, `2w`, `45s` as seconds; anything else is one clear error."""
    match = _AGE.match(str(text))
    if not match or float(match.group(1)) <= 0:
        raise RunsenseError(
            f"'{text}' is not an age", "write a number and a unit: 30d, 12h, 90m, 2w"
        )
    return float(match.group(1)) * _UNIT_S[match.group(2).lower()]


def rerun_request(run: RunRecord) -> dict[str, Any]:
    """What a rerun of `run` is created with: its job and config, its user tags (not runsense's
    own), `runsense/rerun_of`, and the lineage (parent = the run, root = its root)."""
    tags = {k: v for k, v in run.tags.items() if not k.startswith(RESERVED_TAG_PREFIX)}
    return {
        "run_config": dict(run.run_config),
        "tags": {**tags, RERUN_OF_TAG: run.run_id},
        "parent_run_id": run.run_id,
        "root_run_id": run.root_run_id or run.run_id,
    }


def delete_runs(storage: Storage, home: Path, runs: Sequence[RunRecord]) -> list[str]:
    """Delete finished runs with their events and log files; refuses any run in progress."""
    busy = [run for run in runs if run.status not in FINISHED_STATUSES]
    if busy:
        listed = ", ".join(f"{run.run_id[:8]} ({run.status.value})" for run in busy)
        raise RunsenseError(
            f"not deleting runs that have not finished: {listed}",
            "cancel them first: runsense runs cancel RUN_ID",
        )
    deleted = storage.delete_runs([run.run_id for run in runs])
    _remove_logs(home, deleted)
    return deleted


def prune_history(
    storage: Storage, home: Path, before: float, *, dry_run: bool = False
) -> PruneResult:
    """Delete history older than `before` (see `Storage.prune`) and the pruned runs' log files."""
    result = storage.prune(before, dry_run=dry_run)
    if not dry_run:
        _remove_logs(home, result.run_ids)
    return result


def _remove_logs(home: Path, run_ids: Sequence[str]) -> None:
    for run_id in run_ids:
        with contextlib.suppress(FileNotFoundError):
            log_path(home, run_id).unlink()
