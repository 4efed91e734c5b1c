"""Run ids: version-4 UUIDs spelled as `str(uuid.uuid4())`, drawn from the OS's randomness a
block at a time, and never shared between a process and one forked from it."""

from __future__ import annotations

import os
import uuid

from runsense_cli.runs import new_run_id


def test_run_ids_are_version_4_uuids_as_uuid_spells_them_and_never_repeat():
    ids = [new_run_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    for run_id in ids[:600]:  # past a block of drawn ids
        parsed = uuid.UUID(run_id)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
        assert str(parsed) == run_id


def test_a_forked_process_does_not_hand_out_its_parents_drawn_ids():
    new_run_id()  # the parent has ids drawn and not used yet
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        os.write(write, "".join(new_run_id() for _ in range(5)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = pipe.read()
    os.waitpid(pid, 0)
    parent = "".join(new_run_id() for _ in range(5))
    assert len(child) == len(parent) == 5 * 36
    assert not {child[i : i + 36] for i in range(0, 180, 36)} & {
        parent[i : i + 36] for i in range(0, 180, 36)
    }
