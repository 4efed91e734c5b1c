"""Every test gets its own runsense home in a temp dir, so none can touch real data.

PostgreSQL fixtures (a real server, see tests/pg_server.py): `pg_server` (one per xdist worker),
`pg_url` (a fresh database per test), `backend` (run a test once on SQLite, once on PostgreSQL)
and `pg_bindir` (for a test that starts a `PgServer` of its own).
Without PostgreSQL they skip with a one-line reason; `RUNSENSE_TEST_POSTGRES=required` (CI) makes
that a failure. Tests using them get the `postgres` marker, so `-m "not postgres"` leaves them out.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from tests.pg_server import PgServer, find_bindir, postgres_unavailable

REPO = Path(__file__).resolve().parent.parent
POSTGRES_ENV = "RUNSENSE_TEST_POSTGRES"  # "required": missing PostgreSQL fails instead of skipping


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The runsense home for this test (RUNSENSE_HOME), and a fixed terminal width for rich."""
    home = tmp_path / "home"
    monkeypatch.setenv("RUNSENSE_HOME", str(home))
    monkeypatch.setenv("COLUMNS", "160")
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.delenv("RUNSENSE_SLACK_BASE_URL", raising=False)
    return home


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Write a user module `defs.py` into a fresh project dir and return a writer for it.

    The module name is unique per test so imports never leak between tests in one process.
    """
    directory = tmp_path / "proj"
    directory.mkdir()
    counter = {"n": 0}

    def write(source: str, name: str | None = None) -> Path:
        counter["n"] += 1
        module = name or f"defs_{os.getpid()}_{id(directory)}_{counter['n']}"
        path = directory / f"{module}.py"
        path.write_text(source)
        sys.modules.pop(module, None)
        return path

    return write


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses the PostgreSQL server (`backend[postgres]` is marked by its param)."""
    for item in items:
        if "pg_bindir" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.postgres)


def skip_or_fail(reason: str) -> NoReturn:
    """Skip for a developer without PostgreSQL; fail where it is required (CI)."""
    if os.environ.get(POSTGRES_ENV) == "required":
        pytest.fail(f"{reason} ({POSTGRES_ENV}=required)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def pg_bindir() -> Path:
    """PostgreSQL's server binaries; skips (or fails, when required) if they or psycopg are missing.

    Ask for it in a test that starts its own `PgServer` instead of using `pg_server`.
    """
    reason = postgres_unavailable()
    if reason is not None:
        skip_or_fail(reason)
    bindir = find_bindir()
    assert bindir is not None
    return bindir


@pytest.fixture(scope="session")
def pg_server(pg_bindir: Path) -> Iterator[PgServer]:
    """A real PostgreSQL server for this pytest process (so one per xdist worker).

    Per worker rather than one shared by all workers: a test may `restart()`, `stop()` or
    `kill()` it (tests in one worker run one at a time, so nothing else sees that; the next test
    finds it running again), and each worker tears its own server down without cross-process
    bookkeeping. Starting one costs about a second. A test that needs a server to itself uses
    `with PgServer(pg_bindir) as server:` directly.
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    with PgServer(pg_bindir, name=f"runsense-pg-{worker}") as server:
        yield server


@pytest.fixture(autouse=True)
def _pg_server_left_running(request: pytest.FixtureRequest) -> Iterator[None]:
    """After a test that used `pg_server` and left it stopped or killed, start it again (an
    error in that test if it can't), so the next test in this worker finds it running."""
    yield
    if "pg_server" in request.fixturenames:
        server: PgServer = request.getfixturevalue("pg_server")
        if not server.is_running():
            server.start()


@pytest.fixture
def pg_url(pg_server: PgServer) -> Iterator[str]:
    """The URL of a new, empty database (from template0) on `pg_server`, dropped after the test.

    The drop uses WITH (FORCE), so connections a test leaves open (a daemon it started) do not
    block it.
    """
    name = f"test_{uuid.uuid4().hex[:16]}"
    url = pg_server.create_database(name)
    yield url
    if not pg_server.is_running():
        pg_server.start()
    pg_server.drop_database(name)


def sqlite_url(path: Path) -> str:
    """`sqlite:///` + the absolute path, e.g. `sqlite:////tmp/x/runsense.db`: the path survives both
    ways of reading such URLs (everything after `sqlite:///`, or the URL's path component)."""
    return f"sqlite:///{path.resolve()}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database URL, once per backend: the test runs as `test_x[sqlite]` and `test_x[postgres]`.

    For the contract tests (SPEC §10: one suite, both backends):

        def test_terminal_status_is_written_once(backend: str) -> None:
            storage = open_storage(backend)  # whatever the storage package's entry point is
            ...

    SQLite gets a file in the test's tmp dir; PostgreSQL a fresh database from `pg_url` (that run
    skips without PostgreSQL, or fails when RUNSENSE_TEST_POSTGRES=required). `-m "not postgres"`
    runs only the SQLite half; `-k sqlite` / `-k postgres` select one half by id.
    """
    if request.param == "sqlite":
        return sqlite_url(tmp_path / "runsense.db")
    return request.getfixturevalue("pg_url")
