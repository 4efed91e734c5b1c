"""The SQLite file: where and how it is created, what it refuses, and how runs and events read back."""

from __future__ import annotations

import sqlite3
import stat
from itertools import pairwise
from pathlib import Path

import pytest

from runsense_cli.errors import RunsenseError, StorageError
from runsense_cli.runs import EventType, RunStatus
from runsense_cli.storage import open_storage
from runsense_cli.storage.schema import SCHEMA_VERSION


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_home_is_created_0700_and_database_0600(home):
    """Given no home yet, when storage opens, then the directory is 0700 and the file 0600."""
    assert not home.exists()

    with open_storage() as storage:
        storage.create_run("job", "loc", status=RunStatus.QUEUED)
        sidecars = sorted(home.glob("runsense.db-*"))
        assert [p.name for p in sidecars] == ["runsense.db-shm", "runsense.db-wal"]
        assert {p.name: mode(p) for p in sidecars} == {p.name: 0o600 for p in sidecars}

    assert mode(home) == 0o700
    assert mode(home / "runsense.db") == 0o600


def test_the_home_argument_wins_over_the_environment(home, tmp_path):
    """Given an explicit home, when storage opens, then the database goes there, not RUNSENSE_HOME."""
    other = tmp_path / "elsewhere" / "nested"

    open_storage(other).close()

    assert (other / "runsense.db").is_file()
    assert not home.exists()


def test_database_uses_wal_a_busy_timeout_and_records_its_schema_version(home):
    """Given a new database, then it is in WAL mode, waits ≥ 5 s on locks, and has user_version."""
    with open_storage() as storage:
        assert storage.conn.execute("PRAGMA busy_timeout").fetchone()[0] >= 5000

    connection = sqlite3.connect(home / "runsense.db")
    try:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        tables = {r[0] for r in connection.execute("SELECT name FROM sqlite_master")}
    finally:
        connection.close()
    assert {"runs", "events", "sensors", "ticks", "reactions"} <= tables


def test_reopening_keeps_the_data(home):
    """Given a stored run, when the database is opened again, then the run is still there."""
    with open_storage() as storage:
        run = storage.create_run("job", "loc", {"ops": {}}, {"k": "v"}, status=RunStatus.QUEUED)

    with open_storage() as storage:
        again = storage.get_run(run.run_id)

    assert again == run


def test_a_file_that_is_not_sqlite_is_refused_and_left_byte_identical(home):
    """Given runsense.db holding text, when storage opens, then StorageError and the file is intact."""
    home.mkdir()
    path = home / "runsense.db"
    content = b"these are my notes, not a database\n" * 100
    path.write_bytes(content)

    with pytest.raises(StorageError, match="is not a SQLite database") as info:
        open_storage()

    assert info.value.exit_code == 2
    assert "--home" in info.value.hint
    assert path.read_bytes() == content
    assert sorted(p.name for p in home.iterdir()) == ["runsense.db"]


def test_a_corrupt_sqlite_file_is_refused(home):
    """Given a file with a SQLite header but garbage after it, then StorageError, file unchanged."""
    home.mkdir()
    path = home / "runsense.db"
    content = b"SQLite format 3\x00" + b"\xff" * 4000
    path.write_bytes(content)

    with pytest.raises(StorageError, match="is not a usable runsense database"):
        open_storage()

    assert path.read_bytes() == content


def test_a_database_from_a_newer_runsense_is_refused_and_unchanged(home):
    """Given user_version above SCHEMA_VERSION, when storage opens, then it is refused with the
    versions named, and the file is byte-identical."""
    home.mkdir()
    path = home / "runsense.db"
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE runs (run_id TEXT, future_column TEXT)")
    connection.execute("INSERT INTO runs VALUES ('r1', 'x')")
    connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    connection.commit()
    connection.close()
    before = path.read_bytes()

    with pytest.raises(StorageError) as info:
        open_storage()

    assert info.value.message.endswith(
        f"has schema version {SCHEMA_VERSION + 1}, newer than this runsense understands "
        f"({SCHEMA_VERSION})"
    )
    assert "upgrade runsense" in info.value.hint
    assert path.read_bytes() == before


def test_a_home_that_is_a_file_is_refused(home):
    """Given RUNSENSE_HOME pointing at a regular file, then StorageError says it cannot be used."""
    home.write_text("not a directory")

    with pytest.raises(StorageError, match=f"cannot create the runsense home {home}"):
        open_storage()

    assert home.read_text() == "not a directory"


def test_another_programs_sqlite_database_is_refused_and_unchanged(home):
    """Given runsense.db that is some other program's SQLite database (tables, no schema version),
    when storage opens, then it is refused and the file is byte-identical (not even made WAL)."""
    home.mkdir()
    path = home / "runsense.db"
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE runs (x TEXT)")
    connection.execute("INSERT INTO runs VALUES ('theirs')")
    connection.commit()
    connection.close()
    before = path.read_bytes()

    with pytest.raises(StorageError, match="is a SQLite database of another program"):
        open_storage()

    assert path.read_bytes() == before
    assert sorted(p.name for p in home.iterdir()) == ["runsense.db"]


def test_an_empty_file_becomes_a_new_database(home):
    """Given an empty runsense.db (say, from `touch`), when storage opens, then it is set up."""
    home.mkdir()
    (home / "runsense.db").touch()

    with open_storage() as storage:
        assert storage.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert storage.list_runs() == []


def test_opening_without_create_leaves_no_file(home):
    """Given no database, when opened with create=False, then reads work and no file appears."""
    with open_storage(create=False) as storage:
        assert storage.list_runs() == []
        assert storage.newest_event_id() == 0

    assert not (home / "runsense.db").exists()


def test_find_run_by_unique_prefix_ambiguous_prefix_and_unknown_prefix(home):
    """Given runs with ids sharing prefixes, then find_run resolves unique prefixes and explains
    the rest."""
    with open_storage() as storage:
        a = storage.create_run("job", "loc", run_id="abc12345-0000")
        b = storage.create_run("job", "loc", run_id="abc99999-0000")
        c = storage.create_run("job", "loc", run_id="f0000000-0000")

        assert storage.find_run("abc1") == a
        assert storage.find_run("abc9") == b
        assert storage.find_run(" f0 ") == c
        assert storage.find_run(c.run_id) == c
        with pytest.raises(RunsenseError, match="several runs start with 'abc'"):
            storage.find_run("abc")
        with pytest.raises(RunsenseError, match="no run id starts with 'zzz'"):
            storage.find_run("zzz")
        with pytest.raises(RunsenseError, match="an empty run id matches every run"):
            storage.find_run("")


def test_list_runs_is_newest_first_and_filters_by_job_and_status(home):
    """Given runs of two jobs in several statuses, then list_runs filters and sorts newest first."""
    with open_storage() as storage:
        made = []
        for n, (job_name, status) in enumerate(
            [
                ("a", RunStatus.SUCCESS),
                ("b", RunStatus.FAILURE),
                ("a", RunStatus.FAILURE),
                ("b", RunStatus.SUCCESS),
                ("a", RunStatus.SUCCESS),
            ]
        ):
            run = storage.create_run(job_name, "loc", status=RunStatus.STARTING, now=1000.0 + n)
            made.append(storage.set_run_status(run, status))
        ids = [r.run_id for r in made]

        assert [r.run_id for r in storage.list_runs()] == ids[::-1]
        assert [r.run_id for r in storage.list_runs(job_name="a")] == [ids[4], ids[2], ids[0]]
        assert [r.run_id for r in storage.list_runs(status=RunStatus.FAILURE)] == [ids[2], ids[1]]
        assert [r.run_id for r in storage.list_runs(job_name="a", status=RunStatus.SUCCESS)] == [
            ids[4],
            ids[0],
        ]
        assert [r.run_id for r in storage.list_runs(limit=2)] == [ids[4], ids[3]]


def test_runs_created_in_the_same_instant_still_list_newest_first(home):
    """Given runs with equal created_at, then the one stored last is listed first."""
    with open_storage() as storage:
        first = storage.create_run("job", "loc", now=5.0)
        second = storage.create_run("job", "loc", now=5.0)

        assert [r.run_id for r in storage.list_runs()] == [second.run_id, first.run_id]


def test_event_ids_strictly_increase_across_interleaved_runs(home):
    """Given events appended to two runs alternately, then ids increase in write order globally."""
    with open_storage() as storage:
        one = storage.create_run("job", "loc", status=RunStatus.QUEUED)
        two = storage.create_run("job", "loc", status=RunStatus.QUEUED)
        written = []
        for n in range(5):
            for run in (one, two):
                written.append(storage.append_event(run, EventType.LOG, f"{run.run_id} {n}"))

        assert written == sorted(written)
        assert len(set(written)) == len(written)
        assert all(later > earlier for earlier, later in pairwise(written))
        assert storage.newest_event_id() == written[-1]
        logs = [e for e in storage.events_for_run(one.run_id) if e.event_type == EventType.LOG]
        assert [e.message for e in logs] == [f"{one.run_id} {n}" for n in range(5)]


def test_status_changes_write_status_events_and_times(home):
    """Given a run moved QUEUED → STARTING → STARTED → SUCCESS, then each move is an event and the
    run records its start and end time."""
    with open_storage() as storage:
        run = storage.create_run("job", "loc", status=RunStatus.QUEUED)
        [(claimed, _)] = storage.claim_queued_runs("a/1/1", 5)
        assert storage.claim_queued_runs("b/2/2", 5) == []
        run = storage.set_run_status(claimed, RunStatus.STARTED, now=10.0)
        run = storage.set_run_status(run, RunStatus.SUCCESS, now=12.5)

        types = [e.event_type for e in storage.events_for_run(run.run_id)]

    assert types == [
        EventType.RUN_ENQUEUED,
        EventType.RUN_STARTING,
        EventType.RUN_START,
        EventType.RUN_SUCCESS,
    ]
    assert run.status == RunStatus.SUCCESS and run.is_success and run.is_finished
    assert (run.start_time, run.end_time, run.duration) == (10.0, 12.5, 2.5)
    assert run.launcher == "a/1/1"
    assert run.root_run_id == run.run_id and run.parent_run_id is None


def test_get_run_of_an_unknown_id_is_a_user_error(home):
    """Given no such run, when get_run is asked, then a RunsenseError names the id."""
    with open_storage() as storage, pytest.raises(RunsenseError, match="no run with id 'nope'"):
        storage.get_run("nope")


def test_a_second_open_in_one_process_keeps_the_first_connections_locks(home):
    """Given an open Storage, when the same process opens the database again and another process
    then writes and closes, the WAL survives: closing a descriptor of a file drops every POSIX
    lock the process holds on it, so the header check must not reopen a file already open."""
    import subprocess
    import sys

    first = open_storage(home)
    first.conn.execute("SELECT count(*) FROM runs").fetchone()
    open_storage(home).close()
    writer = (
        "import sqlite3, sys; c = sqlite3.connect(sys.argv[1], isolation_level=None);"
        'c.execute("INSERT INTO runs (run_id, job_name, location, status, run_config, tags,'
        " created_at) VALUES ('x', 'j', 'l', 'SUCCESS', '{}', '{}', 0)\"); c.close()"
    )
    subprocess.run([sys.executable, "-c", writer, str(home / "runsense.db")], check=True)
    assert (home / "runsense.db-wal").exists()
    assert first.conn.execute("SELECT count(*) FROM runs").fetchone() == (1,)


def test_a_big_ticks_commits_reach_the_database_file_while_it_goes_on(home):
    """Given writes inside bulk_writes() (a tick over a backlog), then from the second commit on
    a thread copies the WAL back into the database file meanwhile, so the tick neither waits for
    checkpoints nor grows the WAL without bound; afterwards everything reads back."""
    import time

    storage = open_storage(home)
    in_file = f"file:{home / 'runsense.db'}?immutable=1"  # the file alone, without the WAL

    def runs_in_file() -> int:
        connection = sqlite3.connect(in_file, uri=True)
        try:
            return connection.execute("SELECT count(*) FROM runs").fetchone()[0]
        except sqlite3.OperationalError:  # not even the schema copied yet
            return 0
        finally:
            connection.close()

    with storage.bulk_writes():
        first = [storage.create_run("job", "loc").run_id for _ in range(3)]
        deadline = time.monotonic() + 10
        while runs_in_file() < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert runs_in_file() >= 3
        storage.create_run("job", "loc")
    assert len(storage.list_runs(limit=None)) == 4
    assert all(storage.get_run(run_id).job_name == "job" for run_id in first)
    assert storage.conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    storage.close()
