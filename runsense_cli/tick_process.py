"""Every sensor tick in a process of its own, so the user's code cannot break anything else.

Each sensor gets a tick process, forked on its first tick from the process that loaded the
project (the daemon, `sensor tick`): it inherits the imported code and keeps its own database
connection, and then serves that sensor's ticks one after another (`tick_worker`), so a tick
costs a command on a pipe, not a fork. Inside, whatever the sensor function raises
(`SystemExit`, `KeyboardInterrupt` included) is a failed reaction. What a function does to its
process (`os._exit`, a segfault, a hang past `sensor_timeout`) the parent sees: it reads from the
shared `CallWatch` which events were in flight and fails their reactions, retried and parked
after `max_retries` like a raise, so a poison event is counted, never a crash loop; the next tick
forks a fresh process. Meanwhile the parent goes on ticking other sensors and launching runs.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn

from .call_watch import CallInFlight, CallWatch
from .errors import LeaseLostError, RunsenseError
from .evaluation import SensorEvaluator
from .forked import ForkedHelper
from .frames import send_frame
from .identity import current
from .leases import LEASE_WAIT_S, lease_ttl
from .outcomes import TickResult
from .records import Tick, TickStatus
from .sensors import RunStatusSensorDefinition
from .tick_worker import TickCommand, TickEnd, libc, serve_ticks

IDLE_RETIRE_S = 300.0  # a tick process idle this long ends; the next tick forks a new one
RETIRED_GRACE_S = 5.0  # an idle retired process still there after this is killed
MAX_BACKOFF_S = 300.0  # a sensor whose tick process keeps dying outside its function waits

__all__ = ["TickEnd", "TickSupervisor", "tick_sensors"]


@dataclass
class TickJob:
    """One tick a worker is running."""

    sensor: RunStatusSensorDefinition
    sensor_id: int
    token: str
    killed_because: str | None = None  # why the parent stopped it, if it did
    killed_flight: CallInFlight | None = None  # the calls it was stopped for
    stopping: bool = False  # the caller is shutting down: not the function's fault


class TickWorker(ForkedHelper):
    """The parent's handle on one sensor's tick process."""

    def __init__(self, evaluator: SensorEvaluator, sensor: str) -> None:
        self.evaluator = evaluator  # the definitions it was forked with
        self.sensor = sensor
        self.watch = CallWatch(evaluator.page_size)
        self.job: TickJob | None = None
        self.last_used = time.monotonic()
        self.retired_at: float | None = None
        self.identity = str(current())  # the lease's holder for its ticks (TickCommand.holder)
        libc()  # loaded here, once, not in every child
        parent = os.getpid()

        def child(commands: int, results: int) -> NoReturn:
            serve_ticks(evaluator, self.watch, commands, results, parent)

        super().__init__(child)

    def begin(self, job: TickJob, lease_wait: float) -> None:
        self.job = job
        with contextlib.suppress(OSError):  # dead: the next collect reaps it and its job
            send_frame(
                self.commands, TickCommand(job.sensor.name, job.token, lease_wait, self.identity)
            )

    def retire(self) -> None:
        """No more ticks: it ends once the one in progress, if any, is reported."""
        if self.retired_at is None:
            self.retired_at = time.monotonic()
        super().retire()

    def close(self) -> None:
        super().close()
        self.watch.close()


class TickSupervisor:
    """Runs ticks in tick processes, one tick of a sensor at a time, and turns their ends (or
    their processes' deaths) into `TickEnd`s."""

    def __init__(self) -> None:
        self.workers: dict[str, TickWorker] = {}
        self.retired: list[TickWorker] = []  # still finishing a tick, or not yet reaped
        # Sensors whose tick process died outside their function, again and again: how many
        # times in a row, and until when their next tick waits (doubling), so no loop is hot.
        self.held_back: dict[str, tuple[int, float]] = {}

    def _all(self) -> list[TickWorker]:
        return [*self.workers.values(), *self.retired]

    def busy(self, sensor: str) -> bool:
        """Whether a tick of `sensor` is in progress (or held back after repeated crashes)."""
        held = self.held_back.get(sensor)
        if held is not None and time.monotonic() < held[1]:
            return True
        return any(w.sensor == sensor and w.job is not None for w in self._all())

    @property
    def running(self) -> bool:
        return any(w.job is not None for w in self._all())

    def start(
        self,
        evaluator: SensorEvaluator,
        sensor: RunStatusSensorDefinition,
        lease_wait: float = 0,
        sensor_id: int | None = None,
    ) -> None:
        """Start a tick of `sensor`; `sensor_id` when the caller has just read its state."""
        worker = self.workers.get(sensor.name)
        if worker is not None and worker.evaluator is not evaluator:  # the code was reloaded
            self._retire(worker)
            worker = None
        if worker is None:
            worker = self.workers[sensor.name] = TickWorker(evaluator, sensor.name)
        if sensor_id is None:
            sensor_id = evaluator.state(sensor).sensor_id
        worker.begin(TickJob(sensor, sensor_id, uuid.uuid4().hex), lease_wait)

    def _retire(self, worker: TickWorker) -> None:
        if worker in self.retired:
            return
        worker.retire()
        if self.workers.get(worker.sensor) is worker:
            del self.workers[worker.sensor]
        self.retired.append(worker)

    def fds(self) -> list[int]:
        return [fd for worker in self._all() for fd in worker.fds()]

    def next_deadline(self) -> float | None:
        """Seconds until the oldest call in flight runs out of time, if any call is in flight."""
        now = time.monotonic()
        waits = [
            flight.started + w.evaluator.call_timeout - now
            for w in self._all()
            if w.job is not None and (flight := w.watch.in_flight()) is not None
        ]
        return max(0.0, min(waits)) if waits else None

    def collect(self) -> list[TickEnd]:
        """Take the ticks that ended, stop hung calls, and account for processes that died."""
        ends: list[TickEnd] = []
        now = time.monotonic()
        for worker in self._all():
            ends += self._reported(worker, now)
            job = worker.job
            flight = worker.watch.in_flight() if job else None
            timeout = worker.evaluator.call_timeout
            if job and job.killed_because is None and flight and now - flight.started > timeout:
                job.killed_because = (
                    f"did not return within {timeout:g} s (the sensor_timeout setting);"
                    " its process was stopped"
                )
                job.killed_flight = flight
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, signal.SIGKILL)
            killed = job is not None and job.killed_because is not None
            try:
                pid, status = os.waitpid(worker.pid, 0 if killed else os.WNOHANG)
            except ChildProcessError:
                pid, status = worker.pid, 0
            if pid == 0:
                if worker.job is None and worker.retired_at is None:
                    if now - worker.last_used > IDLE_RETIRE_S:
                        self._retire(worker)
                elif worker.job is None and now - worker.retired_at > RETIRED_GRACE_S:
                    with contextlib.suppress(ProcessLookupError):  # it should have ended
                        os.kill(worker.pid, signal.SIGKILL)
                continue
            ends += self._reported(worker, now)  # what it wrote before it ended
            if self.workers.get(worker.sensor) is worker:
                del self.workers[worker.sensor]
            if worker in self.retired:
                self.retired.remove(worker)
            try:
                if worker.job is not None and (end := _ended(worker, worker.job, status)):
                    ends.append(end)
            finally:
                worker.close()
        for end in ends:
            self._hold_back_if_crashing(end, now)
        return ends

    def _hold_back_if_crashing(self, end: TickEnd, now: float) -> None:
        if not end.crashed:
            self.held_back.pop(end.sensor, None)
            return
        times = self.held_back.get(end.sensor, (0, 0.0))[0] + 1
        self.held_back[end.sensor] = (times, now + min(MAX_BACKOFF_S, 2.0 ** (times - 1)))

    def _reported(self, worker: TickWorker, now: float) -> list[TickEnd]:
        ends = [end for end in worker.results.read() if isinstance(end, TickEnd)]
        if ends:
            worker.job = None
            worker.last_used = now
        return ends

    def wait(self, timeout: float) -> None:
        """Block until a tick process writes or ends, or `timeout` seconds pass."""
        deadline = self.next_deadline()
        if deadline is not None:
            timeout = min(timeout, deadline + 0.01)
        fds = self.fds()
        if not fds:
            time.sleep(max(0.0, timeout))
            return
        with selectors.DefaultSelector() as selector:
            for fd in fds:
                selector.register(fd, selectors.EVENT_READ)
            selector.select(max(0.0, timeout))

    def run_all(self, on_end: Callable[[TickEnd], None]) -> None:
        """Wait for every tick in progress (`sensor tick`), handing each end over as it comes."""
        while self.running:
            self.wait(0.5)
            for end in self.collect():
                on_end(end)

    def stop(self, grace: float) -> list[TickEnd]:
        """Retire every tick process; ask those in a tick to commit the page they are on and
        end; stop the rest after `grace` seconds (their page is not stored: the next tick
        handles it again). The ticks that ended meanwhile are returned, to be reported."""
        for worker in list(self.workers.values()):
            self._retire(worker)
        for worker in self.retired:
            if worker.job is not None:
                worker.job.stopping = True
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, signal.SIGTERM)
        ends: list[TickEnd] = []
        deadline = time.monotonic() + grace
        while self.retired and time.monotonic() < deadline:
            self.wait(min(0.05, deadline - time.monotonic()))
            ends += self.collect()
        for worker in self.retired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(worker.pid, 0)
            if worker.job is not None:
                with contextlib.suppress(RunsenseError):
                    worker.evaluator.storage.release_lease(worker.job.sensor_id, worker.job.token)
            worker.close()
        self.retired.clear()
        return ends


def tick_sensors(
    evaluator: SensorEvaluator,
    sensors: list[RunStatusSensorDefinition],
    lease_wait: float = LEASE_WAIT_S,
    stop_grace: float = 4.0,
) -> list[TickEnd]:
    """Tick each sensor once, each in its own process and all at once (`runsense sensor tick`);
    their ends in the order given. Ctrl-C lets each commit the page it is on."""
    supervisor = TickSupervisor()
    ends: dict[str, TickEnd] = {}
    try:
        for sensor in sensors:
            supervisor.start(evaluator, sensor, lease_wait)
        supervisor.run_all(lambda end: ends.setdefault(end.sensor, end))
    finally:
        for end in supervisor.stop(stop_grace):
            ends.setdefault(end.sensor, end)
    return [ends.get(sensor.name) or TickEnd(sensor.name) for sensor in sensors]


def _ended(worker: TickWorker, job: TickJob, status: int) -> TickEnd | None:
    """A tick process died in a tick: the parent's account of it."""
    if job.stopping and job.killed_because is None:
        with contextlib.suppress(RunsenseError):
            worker.evaluator.storage.release_lease(job.sensor_id, job.token)
        return None
    return _fail_lost_calls(worker, job, job.killed_because or _how_it_ended(status))


def _how_it_ended(status: int) -> str:
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        what = {signal.SIGSEGV: " (a segmentation fault)", signal.SIGKILL: " (killed)"}
        return f"ended its process: {name}{what.get(number, '')}"  # type: ignore[call-overload]
    return f"ended its process with exit code {os.WEXITSTATUS(status)} (os._exit or native code)"


def _fail_lost_calls(worker: TickWorker, job: TickJob, how: str) -> TickEnd:
    """Fail the reactions of the calls in flight when the process ended, under the tick's own
    lease (the dead process held it with the token its parent chose)."""
    name = job.sensor.name
    evaluator = worker.evaluator
    storage = evaluator.storage
    flight = job.killed_flight or worker.watch.in_flight()
    try:
        if flight is None:
            return TickEnd(
                name,
                crashed=True,
                error=f"the tick process of sensor '{name}' {how.removeprefix('ended its process')}"
                " outside the sensor function; its page was not stored and is handled again",
            )
        calls = []
        for event_id, attempt in flight.calls:
            event = storage.get_event(event_id)
            if event is not None:
                calls.append((event, storage.get_run(event.run_id), attempt))
        error = f"the sensor function {how}"
        reactions = evaluator.lost_calls(job.sensor, job.sensor_id, calls, error)
        state = storage.sensor_state(evaluator.location, name)
        cursor = state.cursor if state else 0
        tick = Tick(
            0,
            name,
            TickStatus.FAILURE,
            time.time(),
            events_scanned=len(calls),
            cursor_before=cursor,
            cursor_after=cursor,
        )
        for reaction, (_, run, _) in zip(reactions, calls, strict=True):
            tick.count(reaction.state, [], None, f"run {run.run_id}: {error}")
        try:
            storage.commit_page(
                job.sensor_id, tick, reactions, [], [], [], None, None, job.token, lease_ttl()
            )
        except LeaseLostError:
            return TickEnd(name, busy=True)  # another process took the sensor over: it retries
        result = TickResult(name, tick)
        for reaction, (_, run, _) in zip(reactions, calls, strict=True):
            result.add(reaction, run)
        return TickEnd(name, result)
    except RunsenseError as exc:
        return TickEnd(name, error=f"sensor '{name}': {exc}")
    finally:
        with contextlib.suppress(RunsenseError):
            storage.release_lease(job.sensor_id, job.token)
