"""What evaluating a sensor amounts to before it is stored (`Outcome`, one per call of its
function) and after a tick (`TickResult`, what the CLI and the daemon report)."""

from __future__ import annotations

from collections import deque
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


RECENT_REACTIONS = 20  # what a tick hands back is bounded like its record: counts are on `tick`
MAX_PARKED = 100


@dataclass
class TickResult:
    """What a tick did, for the CLI and the daemon: its record, the last RECENT_REACTIONS
    reactions (with their runs), and the first MAX_PARKED reactions it parked (`parked_count`
    counts them all)."""

    sensor: str
    tick: Tick
    reactions: deque[tuple[Reaction, RunRecord]] = field(
        default_factory=lambda: deque(maxlen=RECENT_REACTIONS)
    )
    parked: list[tuple[Reaction, RunRecord]] = field(default_factory=list)
    parked_count: int = 0

    def add(self, reaction: Reaction, run: RunRecord) -> None:
        self.reactions.append((reaction, run))
        if reaction.state == ReactionState.DEAD:
            self.parked_count += 1
            if len(self.parked) < MAX_PARKED:
                self.parked.append((reaction, run))

    @property
    def requested_run_ids(self) -> list[str]:
        """The first runs requested (see `Tick.run_ids`); `tick.runs_requested` counts them."""
        return self.tick.run_ids
