"""One reaction: calling a sensor's function for a run (or a page of runs) and saying what the
result amounts to, before anything is stored. A mixin of `SensorEvaluator`, whose tick decides
when to call these and commits what they return."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .errors import RunsenseError, StorageError, describe
from .instance import RunsenseInstance
from .outcomes import Outcome
from .page_sensors import SensorPage
from .planning import plan
from .records import Reaction, ReactionState
from .runs import STATUS_OF_EVENT, ErrorInfo, EventType, RunEvent, RunRecord
from .sensor_context import RunStatusSensorContext
from .sensor_state import SensorStateStore
from .sensors import PermanentReactionError, RunStatusSensorDefinition
from .storage import Storage
from .text import clean
from .values import short_repr

MAX_RETRY_DELAY_S = 15 * 60


def _label(event_type: EventType) -> str:
    """The status a write-back names: the run status an event means, else the event's name."""
    status = STATUS_OF_EVENT.get(event_type)
    return status.value if status else event_type.value.removeprefix("RUN_")


_LABELS = {event_type: _label(event_type) for event_type in EventType}  # once, not per reaction


class Reacting:
    """Needs the evaluator's storage, project origin, chain-depth limit, clock and instance."""

    storage: Storage
    origin: dict[str, Any] | None
    max_chain_depth: int
    clock: Callable[[], float]
    instance: RunsenseInstance
    contained: bool

    def react(
        self,
        sensor: RunStatusSensorDefinition,
        sensor_id: int | None,
        event: RunEvent,
        run: RunRecord,
        attempt: int = 1,
        keys_in_page: dict[str, str] | None = None,
        keep_log: Callable[[str], None] | None = None,
        store: SensorStateStore | None = None,
    ) -> Outcome:
        """Call the sensor's function for one run and say what it amounts to; stores nothing
        (`keep_log` receives what the function logs, `store` holds its state's writes)."""
        context = sensor.build_context(run, event, self.instance, keep_log, store)
        try:
            raw = sensor.evaluate_run(context)
        except PermanentReactionError as exc:
            return Outcome(ReactionState.DEAD, error=describe(exc), permanent=True)
        except Exception as exc:
            # From the user's code on; ErrorInfo cleans invalid UTF-8.
            stack = ErrorInfo.from_exception(exc, skip_frames=2).stack.rstrip()
            return Outcome(ReactionState.RETRYING, error=stack)
        except BaseException as exc:
            return Outcome(ReactionState.RETRYING, error=self._base_exception(exc))
        return self._outcome(sensor, sensor_id, event, run, raw, keys_in_page)

    def react_page(
        self,
        sensor: RunStatusSensorDefinition,
        sensor_id: int | None,
        pairs: list[tuple[RunEvent, RunRecord]],
        keys_in_page: dict[str, str] | None = None,
        keep_log: Callable[[str], None] | None = None,
        store: SensorStateStore | None = None,
        preview: list[Any] | None = None,
    ) -> list[Outcome]:
        """Call a page sensor's function once for all `pairs`; one outcome per pair. With a
        `preview` list, the page is a preview (`page.preview`) recording into it."""
        store = store if store is not None else SensorStateStore()
        contexts: list[RunStatusSensorContext] = [
            sensor.build_context(run, event, self.instance, keep_log, store) for event, run in pairs
        ]
        page = SensorPage(sensor.name, contexts, store, preview=preview)
        try:
            sensor.evaluate_run(page)  # type: ignore[arg-type]
        except PermanentReactionError as exc:
            return [Outcome(ReactionState.DEAD, error=describe(exc), permanent=True)] * len(pairs)
        except Exception as exc:
            stack = ErrorInfo.from_exception(exc, skip_frames=2).stack.rstrip()
            return [Outcome(ReactionState.RETRYING, error=stack) for _ in pairs]
        except BaseException as exc:
            error = self._base_exception(exc)
            return [Outcome(ReactionState.RETRYING, error=error) for _ in pairs]
        keys = keys_in_page if keys_in_page is not None else {}
        return [
            self._outcome(sensor, sensor_id, event, run, page.result_for(context), keys)
            for (event, run), context in zip(pairs, contexts, strict=True)
        ]

    def _base_exception(self, exc: BaseException) -> str:
        """SystemExit, KeyboardInterrupt and other BaseExceptions from a sensor function fail its
        reaction; only a real Ctrl-C outside a tick process goes on up, to stop the caller."""
        if isinstance(exc, KeyboardInterrupt) and not self.contained:
            raise exc
        stack = ErrorInfo.from_exception(exc, skip_frames=2).stack.rstrip()
        return (
            f"{stack}\nthe sensor function raised {describe(exc)}, which would end its process;"
            " the reaction failed instead"
        )

    def _outcome(
        self,
        sensor: RunStatusSensorDefinition,
        sensor_id: int | None,
        event: RunEvent,
        run: RunRecord,
        raw: Any,
        keys_in_page: dict[str, str] | None,
    ) -> Outcome:
        if isinstance(raw, PermanentReactionError):
            return Outcome(ReactionState.DEAD, error=describe(raw), permanent=True)
        if isinstance(raw, Exception):  # a page sensor's `set_result(context, error)`
            return Outcome(ReactionState.RETRYING, error=clean(describe(raw)))
        label = _LABELS.get(event.event_type) or _label(event.event_type)
        try:
            keys = keys_in_page if keys_in_page is not None else {}
            outcome = plan(
                self.storage,
                self.origin,
                self.max_chain_depth,
                sensor,
                sensor_id,
                run,
                raw,
                keys,
                label,
            )
        except StorageError:
            raise  # the database failed, not the returned value: the page is not committed
        except RunsenseError as exc:
            return Outcome(ReactionState.DEAD, error=clean(str(exc)), permanent=True)
        except Exception as exc:  # a returned value odd enough to break the planning itself
            error = f"sensor '{sensor.name}' returned {short_repr(raw)}: {describe(exc)}"
            return Outcome(ReactionState.DEAD, error=clean(error), permanent=True)
        if outcome.skip_message:
            outcome.skip_message = clean(outcome.skip_message)
        return outcome

    def lost_calls(
        self,
        sensor: RunStatusSensorDefinition,
        sensor_id: int,
        calls: list[tuple[RunEvent, RunRecord, int]],
        error: str,
    ) -> list[Reaction]:
        """Failed reactions for calls that never returned (their process died or was stopped):
        retried on the usual schedule, parked after `max_retries`, like a raise."""
        outcome = Outcome(ReactionState.RETRYING, error=error)
        return [
            self._reaction(sensor, sensor_id, event, run, attempt, outcome)
            for event, run, attempt in calls
        ]

    def _reaction(
        self,
        sensor: RunStatusSensorDefinition,
        sensor_id: int,
        event: RunEvent,
        run: RunRecord,
        attempt: int,
        outcome: Outcome,
    ) -> Reaction:
        now = self.clock()
        state = outcome.state
        next_attempt = None
        if state == ReactionState.RETRYING:
            if attempt > sensor.max_retries:
                state = ReactionState.DEAD
            else:
                delay = sensor.retry_delay_seconds * 2 ** (attempt - 1)
                next_attempt = now + min(delay, MAX_RETRY_DELAY_S)
        return Reaction(
            sensor_id=sensor_id,
            event_id=event.event_id,
            run_id=run.run_id,
            state=state,
            attempts=attempt,
            next_attempt_at=next_attempt,
            error=outcome.error,
            skip_message=outcome.skip_message,
            run_ids=[r.run_id for r in outcome.new_runs],
            created_at=now,
            finished_at=None if state == ReactionState.RETRYING else now,
            sensor=sensor.name,
        )
