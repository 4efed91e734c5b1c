"""Ticking a sensor: every waiting status event, in id order, one transaction per page.

A page's reactions, requested runs, write-back events, tick record and new cursor commit together,
so a crash replays the whole page or none of it: requested runs exist exactly once, while side
effects inside the user's function (a Slack post) happen at least once.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from .definitions import Definitions
from .errors import RunsenseError, describe
from .instance import RunsenseInstance
from .leases import LEASE_WAIT_S, TickLease
from .outcomes import Outcome, TickResult
from .page_sensors import SensorPage
from .planning import plan
from .records import Reaction, ReactionState, SensorState, SensorStatus, Tick, TickLog, TickStatus
from .runs import STATUS_OF_EVENT, ErrorInfo, RunEvent, RunRecord
from .sensor_context import RunStatusSensorContext
from .sensor_state import SensorStateStore
from .sensors import PermanentReactionError, RunStatusSensorDefinition
from .storage import PageResult, Storage, WriteBack
from .text import clean
from .values import short_repr

PAGE_SIZE = 1000
MAX_CHAIN_DEPTH = 20
MAX_RETRY_DELAY_S = 15 * 60


class SensorEvaluator:
    """Evaluates the sensors of one project against one home's storage."""

    def __init__(
        self,
        storage: Storage,
        definitions: Definitions,
        origin: dict[str, Any] | None = None,
        *,
        page_size: int = PAGE_SIZE,
        max_chain_depth: int = MAX_CHAIN_DEPTH,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.storage = storage
        self.instance = RunsenseInstance(storage)
        self.definitions = definitions
        self.origin = origin
        self.page_size = page_size
        self.max_chain_depth = max_chain_depth
        self.clock = clock

    @property
    def location(self) -> str:
        return self.definitions.location

    # -- sensor state ------------------------------------------------------------------------

    def register_sensors(self) -> dict[str, SensorState]:
        """Create rows for sensors seen for the first time; RUNNING defaults start now."""
        return {
            name: self.storage.ensure_sensor(
                self.location, name, sensor.default_status.value == SensorStatus.RUNNING.value
            )
            for name, sensor in self.definitions.sensors.items()
        }

    def state(self, sensor: RunStatusSensorDefinition) -> SensorState:
        state = self.storage.sensor_state(self.location, sensor.name)
        if state is None:
            state = self.register_sensors()[sensor.name]
        return state

    def lag(self, sensor: RunStatusSensorDefinition, state: SensorState | None = None) -> int:
        """Status events waiting, counted up to LAG_CAP (that value means at least as many); a
        sensor never started has none (its first start skips them)."""
        from .storage import LAG_CAP

        state = state or self.state(sensor)
        if state.started_at is None:
            return 0
        return self.storage.count_status_events_after(
            sensor.event_types, state.cursor, sensor.scope(self.location), LAG_CAP
        )

    def has_work(self, sensor: RunStatusSensorDefinition, state: SensorState, now: float) -> bool:
        """One indexed query: a new matching event, or a failed reaction that is due."""
        if self.storage.has_status_events_after(
            sensor.event_types, state.cursor, sensor.scope(self.location)
        ):
            return True
        due = self.storage.next_retry_at(state.sensor_id)
        return due is not None and due <= now

    # -- ticking -----------------------------------------------------------------------------

    def tick(
        self,
        sensor: RunStatusSensorDefinition,
        *,
        lease_wait: float = LEASE_WAIT_S,
        should_stop: Callable[[], bool] | None = None,
    ) -> TickResult:
        """Handle every due retry and every waiting event of `sensor`, then record the tick.

        `should_stop` is asked between pages, so a daemon asked to stop finishes the page it is on
        and leaves the rest for the next tick.
        """
        state = self.state(sensor)
        token = uuid.uuid4().hex
        lease = TickLease.acquire(self.storage, state, token, lease_wait)
        try:
            return self._tick_locked(sensor, lease, should_stop or (lambda: False))
        finally:
            lease.close()
            self.storage.release_lease(state.sensor_id, token)

    def _tick_locked(
        self,
        sensor: RunStatusSensorDefinition,
        lease: TickLease,
        should_stop: Callable[[], bool],
    ) -> TickResult:
        # Re-read inside the lease: another process may have moved the cursor, or stopped the
        # sensor, between the caller's look and the lease.
        state = self.storage.sensor_state(self.location, sensor.name)
        assert state is not None
        if state.status != SensorStatus.RUNNING:
            return TickResult(sensor.name, Tick(0, sensor.name, TickStatus.SKIPPED, self.clock()))
        started = self.clock()
        started_perf = time.perf_counter()
        tick = Tick(
            0,
            sensor.name,
            TickStatus.STARTED,
            started,
            cursor_before=state.cursor,
            cursor_after=state.cursor,
        )
        result = TickResult(sensor.name, tick)
        scope = sensor.scope(self.location)
        sensor_id = lease.sensor_id
        keep_log = TickLog(tick.logs).keep
        store = SensorStateStore(lambda: self.storage.sensor_values(sensor_id))

        def commit(
            pairs: list[tuple[RunEvent, RunRecord, int]],
            cursor: int | None,
            expected: int | None,
        ) -> PageResult:
            reactions, new_runs, run_keys, write_backs = [], [], [], []
            keys_in_page: dict[str, str] = {}
            whole_page = None
            if sensor.page_fn and pairs:
                lease.check()
                whole_page = self.react_page(
                    sensor, sensor_id, [(e, r) for e, r, _ in pairs], keys_in_page, keep_log, store
                )
            for index, (event, run, attempt) in enumerate(pairs):
                if whole_page is None and index and should_stop():
                    # Asked to stop mid-page: commit what is done; the rest waits for next time.
                    if cursor is not None:
                        cursor = pairs[index - 1][0].event_id
                    break
                if whole_page is not None:
                    outcome = whole_page[index]
                else:
                    lease.check()
                    outcome = self.react(
                        sensor, sensor_id, event, run, attempt, keys_in_page, keep_log, store
                    )
                reaction = self._reaction(sensor, sensor_id, event, run, attempt, outcome)
                reactions.append(reaction)
                new_runs += outcome.new_runs
                run_keys += outcome.run_keys
                if outcome.write_back:
                    write_backs.append(
                        WriteBack(run.run_id, run.job_name, run.location, outcome.write_back)
                    )
                result.reactions.append((reaction, run))
                tick.reactions += 1
                tick.run_ids += reaction.run_ids
                if outcome.skip_message:
                    tick.skip_reasons.append(outcome.skip_message)
                if outcome.error:
                    tick.errors.append(f"run {run.run_id}: {outcome.error.splitlines()[-1]}")
            if cursor is not None:
                tick.cursor_after = cursor
            if not pairs and not tick.reactions:
                tick.skip_reasons = ["no new events"]
            tick.status = _tick_status(result.reactions)
            tick.duration_s = time.perf_counter() - started_perf
            try:
                page = self.storage.commit_page(
                    sensor_id,
                    tick,
                    reactions,
                    new_runs,
                    run_keys,
                    write_backs,
                    cursor,
                    expected,
                    lease.token,
                    lease.ttl,
                    store.take_writes(),
                )
            except BaseException:
                store.forget()
                raise
            lease.committed()
            if page == PageResult.CURSOR_MOVED:
                tick.cursor_after = expected or 0
                tick.skip_reasons.append("cursor moved by a user during the tick; it was kept")
            elif page == PageResult.STOPPED:
                tick.skip_reasons.append("sensor stopped during the tick")
            return page

        # Retries first: they are older than anything new.
        while True:
            due = self.storage.due_reactions(sensor_id, self.clock(), self.page_size)
            if not due:
                break
            pairs = []
            for reaction in due:
                event = self.storage.get_event(reaction.event_id)
                if event is None:
                    continue
                pairs.append((event, self.storage.get_run(reaction.run_id), reaction.attempts + 1))
            if commit(pairs, None, None) != PageResult.COMMITTED:
                return result
            if len(due) < self.page_size or should_stop():
                break

        cursor = state.cursor
        while True:
            page, high_water = self.storage.status_events_after(
                sensor.event_types, cursor, scope, self.page_size
            )
            tick.events_scanned += len(page)
            if page or high_water > cursor:
                # monitored_tags are checked here, not in the read: the cursor moves past the
                # runs that don't match, so an idle daemon never reads them again.
                pairs = [(e, r, 1) for e, r in page if sensor.matches(r)]
                if commit(pairs, high_water, cursor) != PageResult.COMMITTED:
                    return result  # a user stopped the sensor or moved its cursor: they win
                cursor = high_water
            if len(page) < self.page_size or should_stop():
                break

        if not tick.tick_id:
            tick.status = TickStatus.SKIPPED
            tick.skip_reasons.append("no new events")
            tick.duration_s = time.perf_counter() - started_perf
            self.storage.record_tick(sensor_id, tick)
        return result

    # -- one reaction ------------------------------------------------------------------------

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
        keys = keys_in_page if keys_in_page is not None else {}
        return [
            self._outcome(sensor, sensor_id, event, run, page.result_for(context), keys)
            for (event, run), context in zip(pairs, contexts, strict=True)
        ]

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
        status = STATUS_OF_EVENT.get(event.event_type)
        label = status.value if status else event.event_type.value.removeprefix("RUN_")
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
        except RunsenseError as exc:
            return Outcome(ReactionState.DEAD, error=clean(str(exc)), permanent=True)
        except Exception as exc:  # a returned value odd enough to break the planning itself
            error = f"sensor '{sensor.name}' returned {short_repr(raw)}: {describe(exc)}"
            return Outcome(ReactionState.DEAD, error=clean(error), permanent=True)
        if outcome.skip_message:
            outcome.skip_message = clean(outcome.skip_message)
        return outcome

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


def _tick_status(reactions: list[tuple[Reaction, RunRecord]]) -> TickStatus:
    states = {reaction.state for reaction, _ in reactions}
    if states & {ReactionState.RETRYING, ReactionState.DEAD}:
        return TickStatus.FAILURE
    if ReactionState.SUCCESS in states:
        return TickStatus.SUCCESS
    return TickStatus.SKIPPED
