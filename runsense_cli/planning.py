"""What a sensor function's return value amounts to: runs to request (with lineage, run_key
dedup and the chain-depth guard), a skip, or a write-back. Pure planning: nothing is stored."""

from __future__ import annotations

from typing import Any

from .config import validate_run_config
from .errors import RunsenseError
from .jobs import JobDefinition
from .outcomes import Outcome
from .records import ReactionState
from .runs import RunRecord, new_run_id
from .sensors import RunRequest, RunStatusSensorDefinition, SkipReason
from .storage import NewRun, Storage
from .text import clean
from .values import chain_depth, check_tags, short_repr, skip_text


def plan(
    storage: Storage,
    origin: dict[str, Any] | None,
    max_chain_depth: int,
    sensor: RunStatusSensorDefinition,
    sensor_id: int | None,
    run: RunRecord,
    raw: Any,
    keys_in_page: dict[str, str],
    status: str = "",
) -> Outcome:
    """What the function's return value `raw` amounts to for `run` (runs to create, a skip, a
    write-back); raises RunsenseError for a value that cannot be honoured. Stores nothing."""
    if raw is None:
        return Outcome(
            ReactionState.SUCCESS,
            write_back=f'Sensor "{sensor.name}" acted on run status '
            f"{status or sensor.run_status.value} of run {run.run_id}.",
        )
    if isinstance(raw, SkipReason):
        return Outcome(ReactionState.SKIPPED, skip_message=skip_text(raw, sensor.name) or "skipped")
    items = [raw] if isinstance(raw, RunRequest) else raw
    if not isinstance(items, list) or not all(
        isinstance(i, (RunRequest, SkipReason)) for i in items
    ):
        raise RunsenseError(
            f"sensor '{sensor.name}' returned {short_repr(raw)}",
            "return None, a RunRequest, a SkipReason, or a list of RunRequests",
        )
    requests = [i for i in items if isinstance(i, RunRequest)]
    if not requests:
        reasons = [
            m for i in items if isinstance(i, SkipReason) and (m := skip_text(i, sensor.name))
        ]
        return Outcome(ReactionState.SKIPPED, skip_message="; ".join(reasons) or "no run requested")
    outcome = Outcome(ReactionState.SUCCESS)
    new_keys: dict[str, str] = {}
    depth = chain_depth(run.tags) + 1
    root = run.root_run_id or run.run_id
    for request in requests:
        target = _target(sensor, request)
        if depth > max_chain_depth:
            raise RunsenseError(
                f"chain-depth limit {max_chain_depth} reached: sensor '{sensor.name}' keeps "
                f"requesting '{target.name}' from runs it requested (loop from root run {root})",
                "make the sensor skip the runs of the jobs it requests",
            )
        where = f"sensor '{sensor.name}': RunRequest"
        config = validate_run_config(target, request.run_config, f"{where}.run_config")
        user_tags = check_tags(request.tags, f"{where}.tags", RunsenseError)
        if request.run_key is not None:
            key = clean(str(request.run_key))
            owner = (
                new_keys.get(key)
                or keys_in_page.get(key)
                or (storage.run_key_owner(sensor_id, key) if sensor_id is not None else None)
            )
            if owner:
                outcome.deduped.append(f"run_key '{key}' already requested run {owner}")
                continue
        run_id = new_run_id()
        tags = {**target.tags, **user_tags}
        tags.update(
            {
                "runsense/sensor": sensor.name,
                "runsense/parent_run_id": run.run_id,
                "runsense/root_run_id": root,
                "runsense/depth": str(depth),
            }
        )
        if request.run_key is not None:
            tags["runsense/run_key"] = key
            new_keys[key] = run_id
            outcome.run_keys.append((key, run_id))
        outcome.new_runs.append(
            NewRun(
                run_id,
                target.name,
                target.location,
                config,
                tags,
                run.run_id,
                root,
                origin,
            )
        )
    keys_in_page.update(new_keys)
    if not outcome.new_runs:
        return Outcome(ReactionState.SKIPPED, skip_message="; ".join(outcome.deduped))
    return outcome


def _target(sensor: RunStatusSensorDefinition, request: RunRequest) -> JobDefinition:
    if request.job_name is None and len(sensor.request_jobs) == 1:
        return sensor.request_jobs[0]  # the usual case, once per RunRequest of a big tick
    targets = {job.name: job for job in sensor.request_jobs}
    if request.job_name is not None:
        if request.job_name not in targets:
            known = ", ".join(sorted(targets)) or "none"
            raise RunsenseError(
                f"sensor '{sensor.name}' requested unknown job_name '{request.job_name}'",
                f"its request_jobs are: {known}",
            )
        return targets[request.job_name]
    if len(targets) == 1:
        return next(iter(targets.values()))
    if not targets:
        raise RunsenseError(
            f"sensor '{sensor.name}' returned a RunRequest but has no target job",
            "add request_job=... to the sensor, or return None / SkipReason",
        )
    raise RunsenseError(
        f"sensor '{sensor.name}' has several request_jobs and the RunRequest names none",
        "set RunRequest(job_name=...)",
    )
