"""The sensor daemon: a loop that fails dead runs, launches queued ones and ticks sensors.

On SQLite one daemon runs per home (a flock); on PostgreSQL any number run at once, all active:
each sensor is ticked under its lease by one of them, each queued run claimed by one. Each tick
runs in a process of its own (`tick_process`), so a sensor that hangs, sleeps or ends its process
delays no other sensor and no run launch. Between passes the daemon sleeps until the storage
reports a change (a status event, a queued run, a command), a tick process ends, or the interval
passes, whichever comes first.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from . import parent_fds
from .errors import RunsenseError
from .evaluation import SensorEvaluator, TickResult
from .identity import current
from .launcher import DeadRun, RunLauncher
from .overdue import mark_overdue_runs
from .reload import CodeWatcher, reload_definitions
from .runs import EventType, RunRecord
from .storage import PruneResult
from .storage.wake import readable
from .tick_process import TickEnd, TickSupervisor
from .worker import LoadedProject

DEFAULT_INTERVAL_S = 0.5
PRUNE_EVERY_S = 3600.0  # with `retention` set, history older than it is pruned this often
# A stop request is honoured between pages; a page still running this long after it (a slow or
# hung sensor function) is abandoned, like a crash: the next daemon replays it (SPEC §5: 5 s).
STOP_GRACE_S = 4.0
TICK_STOP_GRACE_S = 3.0  # tick processes get this much of it, the daemon's own exit the rest


class DaemonAlreadyRunning(RunsenseError):
    """A second daemon on the same home."""


class DaemonReporter(Protocol):
    """What the daemon tells the outside world; the CLI renders it as log lines or a live view."""

    def started(self, pid: int, sensors: list[str]) -> None: ...
    def tick(self, result: TickResult) -> None: ...
    def launched(self, run_ids: list[str]) -> None: ...
    def dead(self, dead: DeadRun) -> None: ...
    def run_ended(self, run: RunRecord) -> None: ...
    def pruned(self, result: PruneResult) -> None: ...
    def reloaded(self, evaluator: SensorEvaluator) -> None: ...
    def error(self, message: str) -> None: ...
    def idle(self) -> None: ...
    def stopping(self) -> None: ...


@dataclass
class DaemonLock:
    """An exclusive flock on `<home>/daemon.lock`; the kernel drops it if the daemon dies."""

    path: Path
    fd: int = field(default=-1)

    def acquire(self) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise DaemonAlreadyRunning(
                f"a runsense daemon is already running on this home (pid {holder})",
                "stop it first, or use another --home",
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self.fd = fd
        parent_fds.keep_from_children(fd)  # a child must not hold the home's lock

    def release(self) -> None:
        if self.fd >= 0:
            parent_fds.forget(self.fd)
            os.close(self.fd)
            self.fd = -1


class Daemon:
    """Each pass: fail dead runs, start queued runs, then tick sensors that have work."""

    def __init__(
        self,
        evaluator: SensorEvaluator,
        launcher: RunLauncher,
        reporter: DaemonReporter,
        interval: float = DEFAULT_INTERVAL_S,
        clock: Callable[[], float] = time.time,
        stop_grace: float = STOP_GRACE_S,
        retention: float | None = None,
        watch_code: bool = False,
    ) -> None:
        self.evaluator = evaluator
        self.launcher = launcher
        self.reporter = reporter
        self.interval = interval
        self.clock = clock
        self.stop_grace = stop_grace
        self.stop_requested = threading.Event()
        self._last_tick: dict[str, float] = {}
        self._deadline: threading.Timer | None = None
        self.identity = str(current())
        self._last_beat = 0.0
        self.retention = retention
        self._last_prune = -PRUNE_EVERY_S
        self._signalled: dict[str, int] = {}  # cancel.enforce_cancels' memory
        self._newest_seen = -1  # the newest event id the last sensor check saw
        self._running: set[str] | None = None  # the sensors running at the last check
        # Events named by wake-ups not yet looked at by a pass (None: unknown, look at all).
        self._changes: frozenset[tuple[str, str, str]] | None = None
        self.ticks = TickSupervisor()
        # A daemon launches for as long as it lives: its run servers may take their next runs.
        launcher.servers_take_runs = True
        directory = (evaluator.origin or {}).get("directory")
        self.watcher = CodeWatcher(directory) if watch_code and directory else None
        self.reload_error: str | None = None
        self._share_project()
        # The fingerprint of the code running now (a failed reload leaves it behind the files).
        self.loaded_code = self.watcher.fingerprint if self.watcher else None

    def request_stop(self, *_: object) -> None:
        """Signal handlers only set this flag; the tick notices it between reactions and commits
        what it has done, the loop between passes.

        A watchdog makes sure the daemon is gone `stop_grace` seconds later even if a page is
        still running; every page commits atomically, so abandoning one loses nothing.
        """
        self.stop_requested.set()
        if self._deadline is None:
            self._deadline = threading.Timer(self.stop_grace, self._abandon_page)
            self._deadline.daemon = True
            self._deadline.start()

    def _abandon_page(self) -> None:
        sys.stdout.flush()
        sys.stderr.write(
            f"daemon stopping: the page in progress did not finish within {self.stop_grace:g} s;"
            " it is left uncommitted and the next daemon handles it again\n"
        )
        sys.stderr.flush()
        os._exit(0)

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)

    def run_forever(self) -> None:
        storage = self.evaluator.storage
        self.reporter.started(os.getpid(), sorted(self.evaluator.definitions.sensors))
        last_full = -self.interval
        while not self.stop_requested.is_set():
            started = time.monotonic()
            full = started - last_full >= self.interval
            if full:
                last_full = started
            try:
                self._reload_if_changed()
                self._heartbeat()
                self.run_pass(full=full)
            except RunsenseError as exc:
                self.reporter.error(str(exc))
            self.reporter.idle()
            try:
                self._wait_for_work(last_full + self.interval)
            except RunsenseError as exc:
                self.reporter.error(str(exc))
                self.stop_requested.wait(max(0.0, last_full + self.interval - time.monotonic()))
        self._report_ticks(self.ticks.stop(min(TICK_STOP_GRACE_S, self.stop_grace * 0.75)))
        self.launcher.close()  # run servers finish the runs they have, then end
        if self._deadline is not None:
            self._deadline.cancel()
        with contextlib.suppress(RunsenseError):  # if it fails, its heartbeat ages out instead
            storage.remove_daemon(self.identity)
        self.reporter.stopping()

    def _wait_for_work(self, full_at: float) -> None:
        """Sleep until a pass has something to do, or the next full pass is due (`full_at`, on
        the monotonic clock). A tick's or a worker's end is something to do (its slot is
        refilled at once), and so is a wake-up naming an event a running sensor watches or a
        queued run this daemon has room for; one naming only other jobs' runs is not: on a busy
        database that is most of them."""
        storage = self.evaluator.storage
        while not self.stop_requested.is_set():
            remaining = full_at - time.monotonic()
            deadline = self.ticks.next_deadline()
            if deadline is not None:
                remaining = min(remaining, deadline + 0.01)
            if remaining <= 0:
                return
            ticks, workers = self.ticks.fds(), self.launcher.fds()
            if not storage.wait_for_change(remaining, also=[*ticks, *workers]):
                return
            if readable(ticks, 0):
                return
            if readable(workers, 0):
                # A worker is done with a run. A server that took its next one needs nothing
                # but its report read (so its pipe never fills); a free slot needs a pass.
                before = len(self.launcher.children)
                self.launcher.reap()
                if len(self.launcher.children) < before:
                    return
            changes = self._hear()
            if changes is None or self._may_concern(changes) or self._may_launch(changes):
                return

    def _hear(self) -> frozenset[tuple[str, str, str]] | None:
        """What wake-ups named since the last look, added to what no pass has looked at yet."""
        heard = self.evaluator.storage.take_changes()
        self._changes = None if heard is None or self._changes is None else self._changes | heard
        return heard

    def _may_launch(self, changes: frozenset[tuple[str, str, str]]) -> bool:
        """A run was queued and this daemon may have room for it."""
        queued = EventType.RUN_ENQUEUED.value
        return any(kind == queued for kind, _, _ in changes) and (
            len(self.launcher.children) < self.launcher.max_concurrent_runs
        )

    def _heartbeat(self) -> None:
        """Say this daemon lives, for `status` and for other hosts (every third of a timeout)."""
        now = time.monotonic()
        if now - self._last_beat < self.launcher.heartbeat_timeout / 3:
            return
        self._last_beat = now
        self.evaluator.storage.heartbeat_daemon(
            self.identity,
            {
                "location": self.evaluator.location,
                "sensors": sorted(self.evaluator.definitions.sensors),
                "interval": self.interval,
                "max_concurrent_runs": self.launcher.max_concurrent_runs,
                # `status` compares this with the files now: is the daemon's code current?
                "code": self.loaded_code,
                "reload_error": self.reload_error,
            },
        )

    def _reload_if_changed(self) -> None:
        """New code takes effect between passes; code that fails to import is not taken."""
        if self.watcher is None or not self.watcher.changed():
            return
        old = self.evaluator
        try:
            definitions = reload_definitions(old.origin or {})
            evaluator = SensorEvaluator(
                old.storage, definitions, old.origin, page_size=old.page_size
            )
            evaluator.call_timeout = old.call_timeout
            evaluator.register_sensors()
        except RunsenseError as exc:
            self.reload_error = str(exc)
            self.reporter.error(f"reload failed, keeping the code loaded before: {exc}")
        else:
            self.evaluator = evaluator
            self._share_project()
            self.reload_error = None
            self.loaded_code = self.watcher.fingerprint
            self.reporter.reloaded(evaluator)
        self._last_beat = -self.launcher.heartbeat_timeout  # say so in `status` at once

    def _share_project(self) -> None:
        """Runs launched from now on are forked with the code loaded now (after a reload too)."""
        if self.evaluator.origin:
            self.launcher.use_project(
                LoadedProject(self.evaluator.origin, self.evaluator.definitions)
            )

    def run_pass(self, full: bool = True) -> None:
        """One pass. A full one (every `interval`) checks everything; one woken early by a
        change does only what a change can call for: its own ended workers, queued runs, and
        sensors if there are new events. Cancels, other hosts' dead runs, overdue runs and the
        sensors' due retries wait for the next full pass, at most `interval` away."""
        from .cancel import enforce_cancels

        storage = self.evaluator.storage
        self._hear()
        changes, self._changes = self._changes, frozenset()  # heard while waiting, and since
        ticks_ended = self._report_ticks()
        if full:
            for run in enforce_cancels(storage, self._signalled):
                self.reporter.run_ended(run)
        self.launcher.reap()
        ended = self.launcher.take_ended()
        taken = self.launcher.take_taken()  # runs that servers took as theirs ended
        # A worker that reported its run finished leaves nothing to fail; one that did not (it
        # died) is failed now, not at the next full pass.
        unfinished = any(run is None or not run.is_finished for run in ended.values())
        dead = self.launcher.fail_dead_runs() if full or unfinished else []
        for one in dead:
            self.reporter.dead(one)
        reported = {one.run.run_id for one in dead}
        for run_id, run in ended.items():
            if run is None or not run.is_finished:
                run = storage.get_run(run_id)
            if run.is_finished and run_id not in reported:
                self.reporter.run_ended(run)
        if taken:
            self.reporter.launched(taken)
        if full:
            self._prune_when_due()
        if launched := self.launcher.launch_queued():
            self.reporter.launched(launched)
        now = self.clock()
        if full:
            mark_overdue_runs(storage, now)
        if not full and not ticks_ended and not self._may_concern(changes):
            return
        newest = storage.newest_event_id()
        if not full and not ticks_ended and newest == self._newest_seen:
            return  # (a sensor busy in a tick when the events came is looked at when it ends)
        self._newest_seen = newest
        running = storage.running_sensors(self.evaluator.location)
        self._running = set(running)
        for name, sensor in self.evaluator.definitions.sensors.items():
            if self.stop_requested.is_set():
                return
            if self.ticks.busy(name):
                continue  # one tick of a sensor at a time; the others go on meanwhile
            state = running.get(name)
            if state is None:
                continue
            interval = sensor.minimum_interval_seconds or 0
            if interval and now - self._last_tick.get(name, 0.0) < interval:
                continue
            if not self.evaluator.has_work(sensor, state, now, newest=newest, retries=full):
                continue
            self.ticks.start(self.evaluator, sensor, lease_wait=0, sensor_id=state.sensor_id)
            self._last_tick[name] = now

    def _may_concern(self, changes: frozenset[tuple[str, str, str]] | None) -> bool:
        """Whether the events the wake-ups named (None: unknown) may concern a sensor running
        at the last look: on a busy database most commits are other jobs' runs, and then a
        woken pass reads nothing. (Starting a sensor is a command: its wake-up names nothing,
        so the next pass looks.)"""
        if changes is None or self._running is None:
            return True
        location = self.evaluator.location
        for name in self._running:
            sensor = self.evaluator.definitions.sensors.get(name)
            if sensor is None:
                return True
            scope = sensor.scope(location)
            types = {event_type.value for event_type in sensor.event_types}
            if any(kind in types and scope.covers(loc, job) for kind, loc, job in changes):
                return True
        return False

    def _report_ticks(self, ends: list[TickEnd] | None = None) -> int:
        """Report the ticks that ended (how many); a busy sensor (another process ticks it)
        says nothing."""
        ends = self.ticks.collect() if ends is None else ends
        for end in ends:
            if end.result is not None:
                self.reporter.tick(end.result)
            elif end.error and not end.busy:
                self.reporter.error(end.error)
        return len(ends)

    def _prune_when_due(self) -> None:
        """With a retention, delete older history once an hour (SPEC §12)."""
        if self.retention is None or time.monotonic() - self._last_prune < PRUNE_EVERY_S:
            return
        self._last_prune = time.monotonic()
        from .operations import prune_history

        result = prune_history(
            self.evaluator.storage, self.launcher.home, self.clock() - self.retention
        )
        if result.run_ids or result.ticks or result.reactions:
            self.reporter.pruned(result)


def serve(
    evaluator: SensorEvaluator,
    launcher: RunLauncher,
    reporter: DaemonReporter,
    *,
    home: Path,
    interval: float = DEFAULT_INTERVAL_S,
    page_size: int | None = None,
    retention: float | None = None,
    watch_code: bool = True,
) -> None:
    """Run a daemon in the foreground until a stop signal (the `runsense daemon` command).

    On a single-host database (SQLite) it first takes the home's lock, before any write, so a
    refused second daemon changes nothing.
    """
    lock = DaemonLock(home / "daemon.lock") if evaluator.storage.single_host else None
    if lock is not None:
        lock.acquire()
    try:
        if page_size is not None:
            evaluator.page_size = page_size
        evaluator.register_sensors()
        the_daemon = Daemon(
            evaluator,
            launcher,
            reporter,
            interval=interval,
            retention=retention,
            watch_code=watch_code,
        )
        the_daemon.install_signal_handlers()
        the_daemon.run_forever()
    finally:
        if lock is not None:
            lock.release()
