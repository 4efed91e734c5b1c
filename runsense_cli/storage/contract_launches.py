"""The storage contract's launching half (guarantee 3 of `contract`): claims of queued runs, the
workers that confirm them, their heartbeats. `contract.Storage` inherits it; `launches_sql` keeps
it for both backends."""

from __future__ import annotations

import abc
from collections.abc import Collection, Iterable, Sequence
from typing import Any

from ..runs import RunRecord


class LaunchesContract(abc.ABC):
    @abc.abstractmethod
    def claim_queued_runs(
        self,
        launcher: str,
        limit: int,
        run_ids: Iterable[str] | None = None,
        workers: Sequence[str] = (),
    ) -> list[tuple[RunRecord, str]]:
        """Move up to `limit` QUEUED runs (oldest first, or only `run_ids`) to STARTING for
        `launcher`, each with a fresh claim token; two launchers never get the same run. The
        i-th run claimed is recorded as `workers[i]`'s, when given (a process that runs
        already), in the same commit: as `record_worker` would, one write less."""

    @abc.abstractmethod
    def record_worker(self, run_id: str, claim_token: str, worker: str) -> bool:
        """The launcher names the process it started for its claim (before that process runs
        anything), so the run is judged by that process's life, not the launcher's."""

    @abc.abstractmethod
    def register_worker(self, run_id: str, claim_token: str, worker: str) -> RunRecord | None:
        """A worker confirms its launcher's claim before executing anything, once: None when
        the run is no longer STARTING under that token (cancelled, or another process took it),
        or the launcher recorded another process for it."""

    @abc.abstractmethod
    def heartbeat_runs(self, run_ids: Sequence[str]) -> None:
        """Mark these runs' workers alive now (database clock)."""

    @abc.abstractmethod
    def claim_next_run(
        self,
        launcher: str,
        worker: str,
        after_run_id: str,
        *,
        origin: dict[str, Any] | None = None,
        jobs: Collection[str] = (),
    ) -> tuple[RunRecord, dict[str, Any] | None] | None:
        """A run server takes its next run itself, inside the commit that ends its run
        `after_run_id` (one commit per run instead of three): the oldest QUEUED run, registered
        to `worker` for `launcher`, with the run's origin. It moves to STARTED at once (events
        RUN_STARTING and RUN_START) when its job is one of `jobs` of the project `origin` (the
        server has it loaded), else to STARTING. None when no run is queued, or when a cancel
        was ever requested for `after_run_id` (its signal may still be on its way). (Whether
        the node has room is the launcher's to say: the server keeps its slot.)"""
