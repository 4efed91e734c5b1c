"""A tick's lease on its sensor: one tick of a sensor at a time, across processes and hosts.

The lease is a token with an expiry on the database's clock. A page commits only while the token
holds (the storage checks it in the commit's transaction), and the tick checks it before every call
of the user's function, so a process paused past its lease stops before doing anyone's work again.
"""

from __future__ import annotations

import os
import threading
import time

from .errors import LeaseLostError, SensorBusyError
from .identity import current
from .records import SensorState
from .storage import Storage

# Another daemon takes over a dead one's sensors within this (SPEC §10); renewed every third.
# RUNSENSE_LEASE_TTL overrides it: shorter for a faster takeover, longer for sensor functions that
# may block between reactions for longer than that.
LEASE_TTL_S = 15.0
LEASE_WAIT_S = 2.0


def lease_ttl() -> float:
    try:
        return max(0.05, float(os.environ["RUNSENSE_LEASE_TTL"]))
    except (KeyError, ValueError):
        return LEASE_TTL_S


def _clock() -> float:
    """Seconds on a clock that keeps counting while the machine sleeps (a closed laptop lid)."""
    boottime = getattr(time, "CLOCK_BOOTTIME", None)
    return time.clock_gettime(boottime) if boottime is not None else time.monotonic()


class TickLease:
    """A tick's hold on its sensor.

    A keeper thread (with its own connection) renews it every third of its time while the tick
    runs, so a sensor call slower than the lease (a Slack post waiting out a rate limit) does not
    lose it to another daemon. Before every call of the user's function the tick checks it: a
    process that was paused past the lease (SIGSTOP, a suspended machine) finds it taken and
    stops before doing anyone's work again; its page would be refused at the commit anyway.
    """

    def __init__(self, storage: Storage, sensor_id: int, token: str, ttl: float | None = None):
        self.storage = storage
        self.sensor_id = sensor_id
        self.token = token
        self.ttl = lease_ttl() if ttl is None else ttl
        self.renewed = _clock()
        self._lost = threading.Event()
        self._done = threading.Event()
        self._keeper = threading.Thread(target=self._keep, name="runsense-lease", daemon=True)
        self._keeper.start()

    def check(self) -> None:
        if not self._lost.is_set() and _clock() - self.renewed < self.ttl / 3:
            return
        if self._lost.is_set() or not self.storage.renew_lease(
            self.sensor_id, self.token, self.ttl
        ):
            raise LeaseLostError(
                "another process took over this sensor while this tick was paused;"
                " it stopped before handling more events"
            )
        self.renewed = _clock()

    def committed(self) -> None:
        """A page commit pushes the expiry out too."""
        self.renewed = _clock()

    def close(self) -> None:
        self._done.set()

    def _keep(self) -> None:
        keeper: Storage | None = None
        try:
            while not self._done.wait(self.ttl / 3):
                try:
                    keeper = keeper or self.storage.reopen()
                    if not keeper.renew_lease(self.sensor_id, self.token, self.ttl):
                        self._lost.set()
                        return
                    self.renewed = _clock()
                except Exception:
                    pass  # the tick's own check renews or finds the lease lost
        finally:
            if keeper is not None:
                keeper.close()

    @classmethod
    def acquire(
        cls,
        storage: Storage,
        state: SensorState,
        token: str,
        wait: float,
        holder: str | None = None,
    ) -> TickLease:
        """Take the sensor's lease, waiting up to `wait` seconds for another tick to finish.

        `holder` names the process that answers for the lease (default: this one); another
        process may take it over at once only when that process is dead.
        """
        deadline = time.monotonic() + wait
        holder = holder or str(current())
        ttl = lease_ttl()
        while not storage.acquire_lease(state.sensor_id, token, ttl, holder):
            if time.monotonic() >= deadline:
                raise SensorBusyError(
                    f"sensor '{state.name}' is busy: another process is ticking it",
                    "wait for that tick to finish (a running daemon ticks it for you)",
                )
            time.sleep(0.05)
        return cls(storage, state.sensor_id, token, ttl)
