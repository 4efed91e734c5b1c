"""The PostgreSQL test infrastructure itself: the real server, its fixtures, skip vs required.

psycopg is imported inside the tests: the `pg_server` fixture has checked it is there by then,
and without it this module must still import (so the skip test below runs everywhere).
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import POSTGRES_ENV, REPO
from tests.pg_server import (
    BINDIR_ENV,
    PgServer,
    PgServerError,
    _process_state,
    find_bindir,
    postgres_unavailable,
)


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def test_server_accepts_tcp_and_unix_socket_connections(pg_server: PgServer) -> None:
    import psycopg

    with pg_server.connect() as connection:
        user, fsync = connection.execute("SELECT current_user, current_setting('fsync')").fetchone()
    assert (user, fsync) == (pg_server.user, "off")
    assert pg_server.url("x") == f"postgresql://{pg_server.user}@127.0.0.1:{pg_server.port}/x"
    with psycopg.connect(
        host=str(pg_server.socket_dir), port=pg_server.port, user=pg_server.user, dbname="postgres"
    ) as connection:
        assert connection.execute("SELECT 1").fetchone() == (1,)


def test_two_databases_are_separate(pg_server: PgServer) -> None:
    import psycopg

    first, second = unique("first"), unique("second")
    first_url, second_url = pg_server.create_database(first), pg_server.create_database(second)
    try:
        with psycopg.connect(first_url) as connection:
            connection.execute("CREATE TABLE only_here (id int)")
        with psycopg.connect(second_url) as connection:
            tables = connection.execute(
                "SELECT count(*) FROM pg_tables WHERE tablename = 'only_here'"
            ).fetchone()
            assert tables == (0,)
    finally:
        pg_server.drop_database(first)
        pg_server.drop_database(second)
    with pg_server.connect() as connection:
        names = {row[0] for row in connection.execute("SELECT datname FROM pg_database")}
    assert not names & {first, second}


@pytest.mark.parametrize("attempt", [1, 2])
def test_pg_url_is_a_fresh_empty_database(pg_url: str, attempt: int) -> None:
    import psycopg

    with psycopg.connect(pg_url) as connection:
        count = connection.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
        ).fetchone()
        assert count == (0,)
        connection.execute("CREATE TABLE runs (id int)")  # the next test's database won't have it


def test_restart_ends_open_sessions_and_keeps_committed_data(
    pg_server: PgServer, pg_url: str
) -> None:
    import psycopg

    connection = psycopg.connect(pg_url, autocommit=True)
    connection.execute("CREATE TABLE events (id int)")
    connection.execute("INSERT INTO events VALUES (1)")

    pg_server.restart()

    with pytest.raises(psycopg.OperationalError):
        connection.execute("SELECT count(*) FROM events")
    assert connection.closed
    connection.close()
    with psycopg.connect(pg_url) as again:  # same URL: same port after the restart
        assert again.execute("SELECT count(*) FROM events").fetchone() == (1,)


def test_kill_then_start_recovers_every_committed_row(pg_server: PgServer, pg_url: str) -> None:
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as connection:
        connection.execute("CREATE TABLE events (id int)")
        connection.execute("INSERT INTO events SELECT generate_series(1, 1000)")

    pg_server.kill()
    assert not pg_server.is_running()
    pg_server.kill()  # nothing left to kill: a no-op
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(pg_url, connect_timeout=5)

    pg_server.start()  # crash recovery
    with psycopg.connect(pg_url) as connection:
        assert connection.execute("SELECT count(*) FROM events").fetchone() == (1000,)


def test_backend_is_a_database_url_per_backend(backend: str, tmp_path: Path) -> None:
    if backend.startswith("sqlite:"):
        assert backend == f"sqlite:///{tmp_path.resolve()}/runsense.db"
        return
    import psycopg

    assert backend.startswith("postgresql://")
    with psycopg.connect(backend) as connection:
        assert connection.execute("SELECT 1").fetchone() == (1,)


def test_a_failed_start_says_why_with_the_server_log(pg_server: PgServer) -> None:
    with PgServer(pg_server.bindir, name="runsense-pg-clash") as other:
        other.stop()
        other.port = pg_server.port  # taken: the start must fail, not hang or pick another port
        other._write_settings()
        with pytest.raises(PgServerError) as failure:
            other.start()
    message = str(failure.value)
    assert "pg_ctl start failed" in message
    assert "server log (last lines)" in message
    assert "could not bind" in message
    assert not other.base.exists()


LEFT_STOPPED = """
import psycopg

def test_stops_it(pg_server):
    pg_server.stop()

def test_finds_it_running(pg_server):
    assert pg_server.is_running()

def test_kills_it(pg_server):
    pg_server.kill()

def test_gets_a_database_again(pg_url):
    psycopg.connect(pg_url).close()
"""


@pytest.mark.slow
def test_a_server_a_test_stopped_or_killed_runs_again_for_the_next_test(
    pg_bindir: Path, tmp_path: Path
) -> None:
    """Run in a nested pytest so the four tests surely share one process, hence one server."""
    test_file = tmp_path / "test_left_stopped.py"
    test_file.write_text(LEFT_STOPPED)
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTEST_")}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "tests.conftest",
            "-p",
            "no:cacheprovider",
            "-c",
            str(REPO / "pyproject.toml"),
            f"--basetemp={tmp_path / 'basetemp'}",
            str(test_file),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "4 passed" in result.stdout, result.stdout + result.stderr


ORPHAN = """
import sys, time
sys.path.insert(0, sys.argv[1])
from tests.pg_server import PgServer
server = PgServer(name="runsense-pg-orphan")
server.start()
print(server.base, server._postmaster_pid(), flush=True)
time.sleep(600)
"""


@pytest.mark.slow
def test_a_server_whose_owner_is_killed_is_stopped_and_removed(pg_bindir: Path) -> None:
    """An xdist worker killed by SIGKILL never runs its teardown: the watchdog stops its server."""
    owner = subprocess.Popen(
        [sys.executable, "-c", ORPHAN, str(REPO)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert owner.stdout is not None
        line = owner.stdout.readline()
    finally:
        owner.kill()
        owner.wait()
    assert line, "the owner process did not start its server"
    base, pid = Path(line.split()[0]), int(line.split()[1])
    deadline = time.monotonic() + 30
    while base.exists() or _process_state(pid) not in (None, "Z"):
        assert time.monotonic() < deadline, f"server {pid} in {base} outlived its owner"
        time.sleep(0.05)


def test_find_bindir_prefers_the_override_and_needs_all_server_programs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("initdb", "pg_ctl"):
        program = tmp_path / name
        program.write_text("#!/bin/sh\n")
        program.chmod(program.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv(BINDIR_ENV, str(tmp_path))
    assert find_bindir() is None  # no postgres program
    postgres = tmp_path / "postgres"
    postgres.write_text("#!/bin/sh\n")
    postgres.chmod(0o755)
    assert find_bindir() == tmp_path


@pytest.mark.slow
@pytest.mark.parametrize("required", [False, True], ids=["developer", "ci"])
def test_without_postgres_the_tests_skip_or_fail_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, required: bool
) -> None:
    """Hide the server binaries from a nested pytest run: a skip, or a failure when required."""
    monkeypatch.setenv(BINDIR_ENV, str(tmp_path / "no-postgres-here"))
    reason = postgres_unavailable()
    assert reason is not None
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTEST_")}
    env.pop(POSTGRES_ENV, None)
    if required:
        env[POSTGRES_ENV] = "required"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            f"--basetemp={tmp_path / 'basetemp'}",
            "tests/test_pg_server.py::test_pg_url_is_a_fresh_empty_database",
            "tests/test_pg_server.py::test_backend_is_a_database_url_per_backend",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = result.stdout + result.stderr
    if required:
        assert result.returncode == 1, output
        assert "1 passed, 3 errors" in output, output  # backend[sqlite] still runs
        assert f"{reason} ({POSTGRES_ENV}=required)" in output, output
    else:
        assert result.returncode == 0, output
        assert "1 passed, 3 skipped" in output, output
        # pytest writes one summary line per test function (its location), each with the reason.
        skip_lines = [line for line in output.splitlines() if line.startswith("SKIPPED")]
        assert skip_lines and all(line.endswith(reason) for line in skip_lines), output
