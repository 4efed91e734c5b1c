"""The inside of a tick process: a loop that runs one tick per command from its parent.

A tick process serves one sensor. It is forked from the process that loaded the project, opens
its own database connection once, and then runs each tick its parent asks for exactly as it would
run in process, with whatever the sensor function raises turned into a failed reaction
(`SensorEvaluator.contained`). Before and after each call of the function it notes the events in
flight in the shared `CallWatch`, so its parent can fail their reactions if the process dies.
Commands and results are length-prefixed pickles on two pipes.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, NoReturn

from .call_watch import CallWatch
from .errors import RunsenseError, SensorBusyError, describe
from .evaluation import SensorEvaluator
from .frames import read_frame, send_frame
from .outcomes import TickResult

EXIT_RUNSENSE_FAILED = 70
PARENT_CHECK_S = 0.5
PR_SET_PDEATHSIG = 1


@dataclass
class TickEnd:
    """How one tick ended, for the caller to report."""

    sensor: str
    result: TickResult | None = None
    error: str | None = None
    busy: bool = False  # another process held the sensor's lease: nothing to say
    crashed: bool = False  # its process died outside the sensor function


@dataclass(frozen=True)
class TickCommand:
    sensor: str
    token: str  # the lease's token, chosen by the parent so it can commit for a dead child
    lease_wait: float
    # The parent's identity, recorded as the lease's holder: when this process dies, no other
    # process takes the sensor over before the parent has failed the call that killed it (it
    # would call that event again as new); if the parent dies too, the lease is free at once.
    holder: str


# -- the loop ----------------------------------------------------------------------------------


def serve_ticks(
    parent: SensorEvaluator, watch: CallWatch, commands: int, results: int, parent_pid: int
) -> NoReturn:
    """The whole life of a tick process; it never returns into the caller's code."""
    code = 0
    name = "?"
    try:
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        # The parent's output may be a live view wrapping sys.stdout: write past it, to the
        # terminal, rather than into this process's stale copy of the view.
        if type(sys.stdout).__module__.startswith("rich"):
            sys.stdout = sys.__stdout__ or sys.stdout
        if type(sys.stderr).__module__.startswith("rich"):
            sys.stderr = sys.__stderr__ or sys.stderr
        _end_with_parent(parent_pid)
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
        watch.owner = os.getpid()
        evaluator.watch = watch
        evaluator.call_timeout = parent.call_timeout
        while (command := read_frame(commands)) is not None:
            name = command.sensor
            stop.clear()
            send_frame(results, _tick(evaluator, command, stop))
    except BaseException as exc:  # runsense's own failure in this process: say it in one line
        code = EXIT_RUNSENSE_FAILED
        with contextlib.suppress(BaseException):
            send_frame(
                results, TickEnd(name, error=f"sensor '{name}': tick failed: {describe(exc)}")
            )
    finally:
        with contextlib.suppress(BaseException):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _tick(evaluator: SensorEvaluator, command: TickCommand, stop: threading.Event) -> TickEnd:
    name = command.sensor
    try:
        result = evaluator.tick(
            evaluator.definitions.sensors[name],
            lease_wait=command.lease_wait,
            should_stop=stop.is_set,
            token=command.token,
            holder=command.holder,
        )
    except SensorBusyError as exc:
        return TickEnd(name, error=str(exc), busy=True)
    except RunsenseError as exc:
        return TickEnd(name, error=f"sensor '{name}': {exc}")
    return TickEnd(name, result)  # bounded: its last reactions and first parked ones


def libc() -> Any:
    """The C library, loaded in the parent so a tick process starts with it (Linux: prctl)."""
    global _LIBC
    if _LIBC is None:
        try:
            _LIBC = ctypes.CDLL(None, use_errno=True)
        except OSError:
            _LIBC = False
    return _LIBC


_LIBC: Any = None


def _end_with_parent(parent: int) -> None:
    """A tick process outlives no parent: it dies with a killed daemon, as a tick running inside
    the daemon would, and a hung call cannot hold its sensor's lease forever. Linux kills it at
    once (PR_SET_PDEATHSIG); elsewhere a thread notices within half a second."""
    c = libc()
    if c and sys.platform.startswith("linux"):
        c.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # it died before that took effect
            os._exit(EXIT_RUNSENSE_FAILED)
        return

    def watch() -> None:
        while True:
            time.sleep(PARENT_CHECK_S)
            if os.getppid() != parent:
                os._exit(EXIT_RUNSENSE_FAILED)

    threading.Thread(target=watch, name="runsense-parent", daemon=True).start()
