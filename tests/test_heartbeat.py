"""Run heartbeats (SPEC §10, guarantee 6): one thread per process beats for every run executing
in it, only where other hosts watch (PostgreSQL); a forked child beats for its own runs."""

from __future__ import annotations

import os
import time

from runsense_cli.heartbeat import Heartbeat
from runsense_cli.identity import ProcessId
from runsense_cli.runs import RunStatus
from runsense_cli.storage import open_storage

ME = str(ProcessId.of())


def beat_of(storage, run_id):
    return storage.get_run(run_id).heartbeat_at


def wait_for_beat(storage, run_id, after, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        beat = beat_of(storage, run_id)
        if beat is not None and (after is None or beat > after):
            return beat
        time.sleep(0.02)
    return None


def test_runs_beat_while_they_execute_and_stop_after(backend):
    with open_storage(url=backend) as storage:
        first = storage.create_run("job", "loc", status=RunStatus.STARTING, worker=ME)
        second = storage.create_run("job", "loc", status=RunStatus.STARTING, worker=ME)
        created = beat_of(storage, first.run_id)
        with Heartbeat(storage, first.run_id, every=0.05):
            with Heartbeat(storage, first.run_id, every=0.05):  # already beating: no second beat
                pass
            with Heartbeat(storage, second.run_id, every=0.05):
                if not storage.needs_heartbeats:  # SQLite: one host, nobody watches
                    time.sleep(0.2)
                    assert beat_of(storage, first.run_id) is created is None
                    return
                assert wait_for_beat(storage, second.run_id, beat_of(storage, second.run_id))
            assert wait_for_beat(storage, first.run_id, created)
            beating = wait_for_beat(storage, first.run_id, beat_of(storage, first.run_id))
            assert beating  # the inner exit did not end the outer beat
        time.sleep(0.15)  # a beat in flight at the exit may still land
        ended = beat_of(storage, first.run_id)
        time.sleep(0.2)
        assert beat_of(storage, first.run_id) == ended


def test_a_forked_child_beats_for_its_own_runs(backend):
    with open_storage(url=backend) as storage:
        if not storage.needs_heartbeats:
            return
        parents = storage.create_run("job", "loc", status=RunStatus.STARTING, worker=ME)
        with Heartbeat(storage, parents.run_id, every=0.05):  # the parent's thread runs
            assert wait_for_beat(storage, parents.run_id, beat_of(storage, parents.run_id))
            pid = os.fork()
            if pid == 0:  # the child: its own connection, its own thread
                code = 1
                try:
                    with open_storage(url=backend) as own:
                        run = own.create_run("job", "loc", status=RunStatus.STARTING, worker=ME)
                        with Heartbeat(own, run.run_id, every=0.05):
                            code = (
                                0 if wait_for_beat(own, run.run_id, beat_of(own, run.run_id)) else 1
                            )
                finally:
                    os._exit(code)
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0
            # The parent's beats go on, on a connection the child never closed.
            assert wait_for_beat(storage, parents.run_id, beat_of(storage, parents.run_id))
