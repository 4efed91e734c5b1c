"""Every sensor tick in a process of its own, so the user's code cannot break anything else.

A tick process is forked from the process that loaded the project (the daemon, `sensor tick`):
it inherits the imported code, so starting one costs about a millisecond and no import. Inside,
the tick runs exactly as in process, on its own database connection; whatever the sensor function
raises (`SystemExit`, `KeyboardInterrupt` included) is a failed reaction there. What a function
does to its process (`os._exit`, a segfault, a hang past `sensor_timeout`) the parent sees: it
reads from the shared `CallWatch` which events were in flight and fails their reactions, retried
and parked after `max_retries` like a raise. A poison event is counted, never a crash loop, and
meanwhile the parent goes on ticking other sensors and launching runs.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pickle
import selectors
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn

from .call_watch import CallWatch
from .errors import LeaseLostError, RunsenseError, SensorBusyError, describe
from .evaluation import SensorEvaluator
from .leases import LEASE_WAIT_S, lease_ttl
from .outcomes import TickResult
from .records import Tick, TickStatus
from .sensors import RunStatusSensorDefinition

RECENT_REACTIONS = 20  # what a finished tick reports of its reactions (the live view's recent)
PARENT_CHECK_S = 0.5
_EXIT_RUNSENSE_FAILED = 70


@dataclass
class TickEnd:
    """How one tick process ended, for the caller to report."""

    sensor: str
    result: TickResult | None = None
    error: str | None = None
    busy: bool = False  # another process held the sensor's lease: nothing to say


@dataclass
class TickProcess:
    """The parent's handle on one running tick process."""

    evaluator: SensorEvaluator
    sensor: RunStatusSensorDefinition
    sensor_id: int
    token: str
    watch: CallWatch
    pid: int = 0
    reader: int = -1
    pidfd: int = -1
    data: bytearray = field(default_factory=bytearray)
    killed_because: str | None = None  # why the parent stopped it, if it did
    stopping: bool = False  # the caller is shutting down: not the function's fault

    def fds(self) -> list[int]:
        return [fd for fd in (self.reader, self.pidfd) if fd >= 0]

    def read_available(self) -> None:
        while self.reader >= 0:
            try:
                chunk = os.read(self.reader, 1 << 16)
            except (BlockingIOError, InterruptedError):
                return
            if not chunk:
                return
            self.data += chunk

    def close(self) -> None:
        for fd in (self.reader, self.pidfd):
            if fd >= 0:
                os.close(fd)
        self.reader = self.pidfd = -1
        self.watch.close()


class TickSupervisor:
    """Starts tick processes, one per sensor at a time, and turns their ends into `TickEnd`s."""

    def __init__(self) -> None:
        self.running: dict[str, TickProcess] = {}

    def start(
        self, evaluator: SensorEvaluator, sensor: RunStatusSensorDefinition, lease_wait: float = 0
    ) -> None:
        state = evaluator.state(sensor)  # registered here, not in each child
        _libc()
        proc = TickProcess(
            evaluator, sensor, state.sensor_id, uuid.uuid4().hex, CallWatch(evaluator.page_size)
        )
        reader, writer = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            os.close(reader)
            _tick_in_child(proc, writer, lease_wait)
        os.close(writer)
        os.set_blocking(reader, False)
        proc.pid, proc.reader = pid, reader
        with contextlib.suppress(AttributeError, OSError):
            proc.pidfd = os.pidfd_open(pid)  # readable when it exits (Linux 5.3+)
        self.running[sensor.name] = proc

    def fds(self) -> list[int]:
        return [fd for proc in self.running.values() for fd in proc.fds()]

    def next_deadline(self) -> float | None:
        """Seconds until the oldest call in flight runs out of time, if any call is in flight."""
        now = time.monotonic()
        waits = [
            flight.started + proc.evaluator.call_timeout - now
            for proc in self.running.values()
            if (flight := proc.watch.in_flight()) is not None
        ]
        return max(0.0, min(waits)) if waits else None

    def collect(self) -> list[TickEnd]:
        """Read what the tick processes wrote, stop hung calls, and reap the ones that ended."""
        ends: list[TickEnd] = []
        now = time.monotonic()
        for name, proc in list(self.running.items()):
            proc.read_available()
            flight = proc.watch.in_flight()
            timeout = proc.evaluator.call_timeout
            if proc.killed_because is None and flight and now - flight.started > timeout:
                proc.killed_because = (
                    f"did not return within {timeout:g} s (the sensor_timeout setting);"
                    " its process was stopped"
                )
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
            try:
                pid, status = os.waitpid(proc.pid, 0 if proc.killed_because else os.WNOHANG)
            except ChildProcessError:
                pid, status = proc.pid, 0
            if pid == 0:
                continue
            proc.read_available()
            del self.running[name]
            try:
                end = _ended(proc, status)
            finally:
                proc.close()
            if end is not None:
                ends.append(end)
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
        """Wait for every tick process (`sensor tick`), handing each end over as it comes."""
        while self.running:
            self.wait(0.5)
            for end in self.collect():
                on_end(end)

    def stop(self, grace: float) -> None:
        """Ask every tick process to commit the page it is on and end; stop the rest after
        `grace` seconds (their page is not stored, the next tick handles it again)."""
        for proc in self.running.values():
            proc.stopping = True
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while self.running and time.monotonic() < deadline:
            self.wait(deadline - time.monotonic())
            self.collect()
        for proc in self.running.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
        for _name, proc in list(self.running.items()):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(proc.pid, 0)
            with contextlib.suppress(RunsenseError):
                proc.evaluator.storage.release_lease(proc.sensor_id, proc.token)
            proc.close()
        self.running.clear()


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
        supervisor.stop(stop_grace)
    return [ends.get(sensor.name) or TickEnd(sensor.name) for sensor in sensors]


def _ended(proc: TickProcess, status: int) -> TickEnd | None:
    """What a tick process's end amounts to: its own report, or the parent's account of it."""
    if proc.killed_because is None and os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
        try:
            end = pickle.loads(bytes(proc.data))
        except Exception:
            end = None
        if isinstance(end, TickEnd):
            return end
    if proc.stopping and proc.killed_because is None:
        with contextlib.suppress(RunsenseError):
            proc.evaluator.storage.release_lease(proc.sensor_id, proc.token)
        return None
    return _fail_lost_calls(proc, proc.killed_because or _how_it_ended(status))


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


def _fail_lost_calls(proc: TickProcess, how: str) -> TickEnd:
    """Fail the reactions of the calls in flight when the process ended, under the tick's own
    lease (the dead process held it with the token its parent chose)."""
    name = proc.sensor.name
    storage = proc.evaluator.storage
    flight = proc.watch.in_flight()
    try:
        if flight is None:
            return TickEnd(
                name,
                error=f"the tick process of sensor '{name}' {how.removeprefix('ended its process')}"
                " outside the sensor function; its page was not stored and is handled again",
            )
        calls = []
        for event_id, attempt in flight.calls:
            event = storage.get_event(event_id)
            if event is not None:
                calls.append((event, storage.get_run(event.run_id), attempt))
        error = f"the sensor function {how}"
        reactions = proc.evaluator.lost_calls(proc.sensor, proc.sensor_id, calls, error)
        state = storage.sensor_state(proc.evaluator.location, name)
        cursor = state.cursor if state else 0
        tick = Tick(
            0,
            name,
            TickStatus.FAILURE,
            time.time(),
            events_scanned=len(calls),
            reactions=len(reactions),
            errors=[f"run {run.run_id}: {error}" for _, run, _ in calls],
            cursor_before=cursor,
            cursor_after=cursor,
        )
        try:
            storage.commit_page(
                proc.sensor_id, tick, reactions, [], [], [], None, None, proc.token, lease_ttl()
            )
        except LeaseLostError:
            return TickEnd(name, busy=True)  # another process took the sensor over: it retries
        runs = [run for _, run, _ in calls]
        return TickEnd(name, TickResult(name, tick, list(zip(reactions, runs, strict=True))))
    except RunsenseError as exc:
        return TickEnd(name, error=f"sensor '{name}': {exc}")
    finally:
        with contextlib.suppress(RunsenseError):
            storage.release_lease(proc.sensor_id, proc.token)


# -- in the child --------------------------------------------------------------------------------


def _tick_in_child(proc: TickProcess, writer: int, lease_wait: float) -> NoReturn:
    """The whole life of a tick process; it never returns into the caller's code."""
    code = 0
    name = proc.sensor.name
    try:
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        # The parent's output may be a live view wrapping sys.stdout: write past it, to the
        # terminal, rather than into the child's stale copy of the view.
        if type(sys.stdout).__module__.startswith("rich"):
            sys.stdout = sys.__stdout__ or sys.stdout
        if type(sys.stderr).__module__.startswith("rich"):
            sys.stderr = sys.__stderr__ or sys.stderr
        _end_with_parent(os.getppid())
        parent = proc.evaluator
        parent.storage.hold_in_fork()  # before its own connection (see SqliteStorage)
        evaluator = SensorEvaluator(
            parent.storage.reopen(),
            parent.definitions,
            parent.origin,
            page_size=parent.page_size,
            max_chain_depth=parent.max_chain_depth,
            clock=parent.clock,
        )
        evaluator.contained = True
        evaluator.watch = proc.watch
        evaluator.call_timeout = parent.call_timeout
        try:
            result = evaluator.tick(
                proc.sensor, lease_wait=lease_wait, should_stop=stop.is_set, token=proc.token
            )
            end = TickEnd(name, TickResult(name, result.tick, result.reactions[-RECENT_REACTIONS:]))
        except SensorBusyError as exc:
            end = TickEnd(name, error=str(exc), busy=True)
        except RunsenseError as exc:
            end = TickEnd(name, error=f"sensor '{name}': {exc}")
        _send(writer, end)
    except BaseException as exc:  # runsense's own failure in this process: say it in one line
        code = _EXIT_RUNSENSE_FAILED
        with contextlib.suppress(BaseException):
            _send(writer, TickEnd(name, error=f"sensor '{name}': tick failed: {describe(exc)}"))
    finally:
        with contextlib.suppress(BaseException):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _send(writer: int, end: TickEnd) -> None:
    data = memoryview(pickle.dumps(end))
    while data:
        data = data[os.write(writer, data) :]
    os.close(writer)


def _libc() -> Any:
    """The C library, loaded in the parent so a tick process starts with it (Linux: prctl)."""
    global _LIBC
    if _LIBC is None:
        try:
            _LIBC = ctypes.CDLL(None, use_errno=True)
        except OSError:
            _LIBC = False
    return _LIBC


_LIBC: Any = None
PR_SET_PDEATHSIG = 1


def _end_with_parent(parent: int) -> None:
    """A tick process outlives no parent: it dies with a killed daemon, as a tick running inside
    the daemon would, and a hung call cannot hold its sensor's lease forever. Linux kills it at
    once (PR_SET_PDEATHSIG); elsewhere a thread notices within half a second."""
    libc = _libc()
    if libc and sys.platform.startswith("linux"):
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # it died before that took effect
        os._exit(_EXIT_RUNSENSE_FAILED)

    def watch() -> None:
        while True:
            time.sleep(PARENT_CHECK_S)
            if os.getppid() != parent:
                os._exit(_EXIT_RUNSENSE_FAILED)

    threading.Thread(target=watch, name="runsense-parent", daemon=True).start()
