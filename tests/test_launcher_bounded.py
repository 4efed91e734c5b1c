"""A launcher's memory stays flat however many runs it launches (issue 9: a daemon launches
millions): every per-run structure it keeps is bounded by the runs in progress, whether its
caller is the daemon's pass, `sensor tick` waiting for its runs, or a loop that only launches."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from runsense_cli import launcher as launcher_module
from runsense_cli.launcher import RunLauncher
from runsense_cli.runs import RunStatus
from runsense_cli.storage import open_storage

RUNS = 240
SLOTS = 4
ENDED_KEPT = 30  # the launcher's cap on ended runs nobody asked for, made small to be reached


class FinishedWorker:
    """A worker that has already run its run to the end and exited with `code`."""

    def __init__(self, code: int) -> None:
        self.pid = os.getpid()
        self.code = code

    def poll(self) -> int:
        return self.code


class InstantLauncher(RunLauncher):
    """Spawns no process: the 'worker' finishes its run at once, or every `die_every`th dies
    mid-run (0: none)."""

    spawned = 0
    die_every = 7

    def _spawn(self, run: Any, token: str, take: Any) -> Any:
        self.spawned += 1
        if self.die_every and self.spawned % self.die_every == 0:
            return FinishedWorker(-9)  # killed: the run stays in progress until judged dead
        run = self.storage.set_run_status(run, RunStatus.STARTED)
        self.storage.set_run_status(run, RunStatus.SUCCESS)
        return FinishedWorker(0)


def per_run_sizes(launcher: RunLauncher) -> dict[str, int]:
    """Every container the launcher holds, by attribute: a new per-run one is caught too."""
    return {
        name: len(value)
        for name, value in vars(launcher).items()
        if hasattr(value, "__len__") and not isinstance(value, (str, bytes))
    }


def daemon_pass(launcher: RunLauncher) -> None:
    launcher.fail_dead_runs()
    launcher.take_ended()
    launcher.take_taken()
    launcher.launch_queued()
    launcher.launch_queued()  # after the ticks, as the daemon does


def launch_only(launcher: RunLauncher) -> None:
    launcher.die_every = 0  # nothing here would ever fail a dead worker's run to free its slot
    launcher.launch_queued()


def wait_like_sensor_tick(launcher: RunLauncher) -> None:
    launcher.launch_queued()
    launcher.fail_dead_runs()  # wait_for's loop: never takes the ended runs


@pytest.fixture
def storage(home) -> Iterator[Any]:
    with open_storage(home) as opened:
        yield opened


@pytest.mark.parametrize("step", [daemon_pass, launch_only, wait_like_sensor_tick])
def test_per_run_structures_stay_bounded_over_many_launched_runs(
    storage, home, monkeypatch, step: Callable[[RunLauncher], None]
) -> None:
    monkeypatch.setattr(launcher_module, "ENDED_KEPT", ENDED_KEPT)
    launcher = InstantLauncher(storage, home, SLOTS)
    peak: dict[str, int] = {}
    for _ in range(RUNS // SLOTS):
        for _ in range(SLOTS):
            storage.create_run("job", "loc", status=RunStatus.QUEUED)
        step(launcher)
        for name, size in per_run_sizes(launcher).items():
            peak[name] = max(peak.get(name, 0), size)
    assert launcher.spawned >= RUNS - SLOTS  # the loop really launched them all
    # A structure that grew by one per run would be near RUNS here; the cap is ENDED_KEPT.
    assert max(peak.values()) <= ENDED_KEPT, peak
    assert storage.runs_with_status([RunStatus.QUEUED]) == []


def test_a_worker_that_died_is_still_judged_after_launch_only_passes(storage, home) -> None:
    """Dropping finished runs' exit codes keeps the code of a run still in progress."""
    launcher = InstantLauncher(storage, home, SLOTS)
    launcher.spawned = 6  # the next spawn is the 7th: its worker dies mid-run
    run = storage.create_run("job", "loc", status=RunStatus.QUEUED)
    assert launcher.launch_queued() == [run.run_id]
    launcher.launch_queued()  # reaps the dead child; its run is still in progress
    [dead] = launcher.fail_dead_runs()
    assert "was killed by SIGKILL before the run finished" in dead.reason
    assert storage.get_run(run.run_id).status == RunStatus.FAILURE
