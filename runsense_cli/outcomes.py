"""What evaluating a sensor amounts to before it is stored (`Outcome`, one per call of its
function) and after a tick (`TickResult`, what the CLI and the daemon report)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .records import Reaction, ReactionState, Tick
from .runs import RunRecord
from .storage import NewRun


@dataclass
class Outcome:
    """What one call of a sensor's function amounts to, before anything is stored."""

    state: ReactionState
    new_runs: list[NewRun] = field(default_factory=list)
    run_keys: list[tuple[str, str]] = field(default_factory=list)
    skip_message: str | None = None
    error: str | None = None
    write_back: str | None = None
    permanent: bool = False
    deduped: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return self.error is not None


@dataclass
class TickResult:
    sensor: str
    tick: Tick
    reactions: list[tuple[Reaction, RunRecord]] = field(default_factory=list)

    @property
    def requested_run_ids(self) -> list[str]:
        return self.tick.run_ids
