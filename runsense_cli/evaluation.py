"""Ticking a sensor: every waiting status event, in id order, one transaction per page.

A page's reactions, requested runs, write-back events, tick record and new cursor commit together,
so a crash replays the whole page or none of it: requested runs exist exactly once, while side
effects inside the user's function (a Slack post) happen at least once.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from .call_watch import DEFAULT_CALL_TIMEOUT_S, CallWatch
from .definitions import Definitions
from .instance import RunsenseInstance
from .leases import LEASE_WAIT_S, TickLease
from .outcomes import TickResult
from .reacting import Reacting
from .records import SensorState, SensorStatus, Tick, TickLog, TickStatus
from .registration import register_sensors
from .runs import RunEvent, RunRecord
from .sensor_state import SensorStateStore
from .sensors import RunStatusSensorDefinition
from .storage import PageResult, Storage, WriteBack

PAGE_SIZE = 1000
MAX_CHAIN_DEPTH = 20
# A per-pass check that finds this many events past the cursor, none matching, moves the stored
# cursor past them (one write per so many events, so an idle daemon stays idle).
SKIP_AFTER_EVENTS = 10_000


class SensorEvaluator(Reacting):
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
        # Set in a tick process (`tick_process`): whatever the user's function raises becomes a
        # failed reaction, and each call is recorded where the parent reads it after a crash.
        self.contained = False
        self.watch: CallWatch | None = None
        self.call_timeout = DEFAULT_CALL_TIMEOUT_S
        # Per sensor id: ((event types, scope), cursor, newest event id) from the last per-pass
        # check that found nothing: no matching event lies between the two ids.
        self._checked: dict[int, tuple[Any, int, int]] = {}
        self.skip_after = SKIP_AFTER_EVENTS

    @property
    def location(self) -> str:
        return self.definitions.location

    # -- sensor state ------------------------------------------------------------------------

    def register_sensors(self) -> dict[str, SensorState]:
        """Create rows for sensors seen for the first time; RUNNING defaults start now."""
        return register_sensors(self.storage, self.definitions)

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

    def has_work(
        self,
        sensor: RunStatusSensorDefinition,
        state: SensorState,
        now: float,
        *,
        newest: int | None = None,
        retries: bool = True,
    ) -> bool:
        """A new matching event, or (with `retries`) a failed reaction that is due: the daemon's
        per-pass check. `newest`: the newest event id, if the caller has just read it.

        O(1) in history size whatever the scope: events a pass found not to match are never read
        again (the mark), and once many pile up the stored cursor skips them, so a restarted
        daemon does not read them either. The cursor itself moves only when a page commits.
        """
        if self._new_events(sensor, state, newest):
            return True
        if not retries:
            return False
        due = self.storage.next_retry_at(state.sensor_id)
        return due is not None and due <= now

    def _new_events(
        self, sensor: RunStatusSensorDefinition, state: SensorState, newest: int | None = None
    ) -> bool:
        scope = sensor.scope(self.location)
        key = (sensor.event_types, scope)
        mark = self._checked.get(state.sensor_id)
        after = state.cursor
        if mark is not None and mark[0] == key and mark[1] <= state.cursor:
            after = max(after, mark[2])  # nothing matched in (mark[1], mark[2]]
        # Read first: every event up to `newest` is visible by now (ids become visible in order).
        if newest is None:
            newest = self.storage.newest_event_id()
        if newest <= after:
            return False
        if self.storage.has_status_events_after(sensor.event_types, after, scope):
            return True
        self._checked[state.sensor_id] = (key, state.cursor, newest)
        if newest - state.cursor >= self.skip_after and self.storage.skip_cursor(
            state.sensor_id, state.cursor, newest
        ):
            self._checked[state.sensor_id] = (key, newest, newest)
        return False

    # -- ticking -----------------------------------------------------------------------------

    def tick(
        self,
        sensor: RunStatusSensorDefinition,
        *,
        lease_wait: float = LEASE_WAIT_S,
        should_stop: Callable[[], bool] | None = None,
        token: str | None = None,
        holder: str | None = None,
    ) -> TickResult:
        """Handle every due retry and every waiting event of `sensor`, then record the tick.

        `should_stop` is asked between pages, so a daemon asked to stop finishes the page it is on
        and leaves the rest for the next tick. `token` names the lease (a tick process's parent
        chooses it, to fail the reactions of a call that ended the process), and `holder` the
        process that answers for the lease (that parent: see TickCommand.holder).
        """
        state = self.state(sensor)
        idle = self._idle_tick(sensor, state)
        if idle is not None:
            return idle
        token = token or uuid.uuid4().hex
        lease = TickLease.acquire(self.storage, state, token, lease_wait, holder)
        try:
            with self.storage.bulk_writes():
                return self._tick_locked(sensor, lease, should_stop or (lambda: False))
        finally:
            lease.close()
            self.storage.release_lease(state.sensor_id, token)

    def _idle_tick(
        self, sensor: RunStatusSensorDefinition, state: SensorState
    ) -> TickResult | None:
        """A tick with nothing to do (no event at all past the cursor, no retry due), recorded
        in one commit without the lease: it calls no user function, so it cannot do another
        tick's work twice. None when there is work, or the sensor is not RUNNING, or another
        tick holds the lease or moved the cursor meanwhile: then the tick goes the usual way."""
        if state.status != SensorStatus.RUNNING:
            return None
        started = self.clock()
        started_perf = time.perf_counter()
        if self.storage.newest_event_id() > state.cursor:
            return None
        due = self.storage.next_retry_at(state.sensor_id)
        if due is not None and due <= started:
            return None
        tick = _new_tick(sensor.name, TickStatus.SKIPPED, started, state.cursor)
        tick.note("no new events")
        tick.duration_s = time.perf_counter() - started_perf
        if not self.storage.record_idle_tick(state.sensor_id, tick, state.cursor):
            return None
        return TickResult(sensor.name, tick)

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
        tick = _new_tick(sensor.name, TickStatus.STARTED, started, state.cursor)
        result = TickResult(sensor.name, tick)
        scope = sensor.scope(self.location)
        sensor_id = lease.sensor_id
        keep_log = TickLog(tick.logs).keep
        store = SensorStateStore(lambda: self.storage.sensor_values(sensor_id))
        watch = self.watch

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
                if watch:
                    watch.calling([(e.event_id, attempt) for e, _, attempt in pairs])
                try:
                    whole_page = self.react_page(
                        sensor,
                        sensor_id,
                        [(e, r) for e, r, _ in pairs],
                        keys_in_page,
                        keep_log,
                        store,
                    )
                finally:
                    if watch:
                        watch.returned()
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
                    if watch:
                        watch.calling_one(event.event_id, attempt)
                    try:
                        outcome = self.react(
                            sensor, sensor_id, event, run, attempt, keys_in_page, keep_log, store
                        )
                    finally:
                        if watch:
                            watch.returned()
                reaction = self._reaction(sensor, sensor_id, event, run, attempt, outcome)
                reactions.append(reaction)
                if outcome.new_runs:
                    new_runs += outcome.new_runs
                    run_keys += outcome.run_keys
                if outcome.write_back:
                    write_backs.append(
                        WriteBack(
                            run.run_id,
                            run.job_name,
                            run.location,
                            outcome.write_back,
                            run.created_at,
                        )
                    )
                result.add(reaction, run)
                error = outcome.error
                tick.count(
                    reaction.state,
                    reaction.run_ids,
                    outcome.skip_message,
                    f"run {run.run_id}: {_last_line(error)}" if error else None,
                )
            if cursor is not None:
                tick.cursor_after = cursor
            if not pairs and not tick.reactions:
                tick.skip_reasons = ["no new events"]
            tick.settle()
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
                tick.note("cursor moved by a user during the tick; it was kept")
            elif page == PageResult.STOPPED:
                tick.note("sensor stopped during the tick")
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
        # Events whose call ended a tick process have a failed reaction ahead of the cursor: their
        # retries handle them, so a poison event is not called again as new (usually empty).
        failed_ahead = self.storage.reacted_events_after(sensor_id, cursor)
        while True:
            page, high_water = self.storage.status_events_after(
                sensor.event_types, cursor, scope, self.page_size
            )
            tick.events_scanned += len(page)
            if page or high_water > cursor:
                # monitored_tags are checked here, not in the read: the cursor moves past the
                # runs that don't match, so an idle daemon never reads them again.
                pairs = [
                    (e, r, 1)
                    for e, r in page
                    if sensor.matches(r) and e.event_id not in failed_ahead
                ]
                if commit(pairs, high_water, cursor) != PageResult.COMMITTED:
                    return result  # a user stopped the sensor or moved its cursor: they win
                cursor = high_water
            if len(page) < self.page_size or should_stop():
                break

        if not tick.tick_id:
            tick.status = TickStatus.SKIPPED
            tick.note("no new events")
            tick.duration_s = time.perf_counter() - started_perf
            self.storage.record_tick(sensor_id, tick)
        return result


def _last_line(text: str) -> str:
    """The last line of an error (its "Type: message"), without splitting a long traceback."""
    text = text.rstrip()
    return text[text.rfind("\n") + 1 :]


def _new_tick(name: str, status: TickStatus, started: float, cursor: int) -> Tick:
    return Tick(0, name, status, started, cursor_before=cursor, cursor_after=cursor)


def requested_during(
    storage: Storage, sensor: str, since: float, until: float, page: int = 500
) -> Iterator[str]:
    """Ids of the runs `sensor` requested in [since, until] (a tick holds the sensor's lease
    throughout, so these are its tick's runs), oldest first, read a page at a time."""
    after = (since, "")
    while True:
        runs = storage.runs_created_between(since, until, after, page)
        for run in runs:
            if run.tags.get("runsense/sensor") == sensor:
                yield run.run_id
        if len(runs) < page:
            return
        after = (runs[-1].created_at, runs[-1].run_id)
