"""A real, throwaway PostgreSQL server for tests: `PgServer` runs initdb and pg_ctl in a temp dir.

Why a real server and not a mock: the storage contract (SPEC §10) is about what PostgreSQL does
under concurrency, restarts and crashes, so tests need the real thing. The server is tuned for
speed over durability (fsync off, no locale), trusts every local connection, listens on 127.0.0.1
on a free port and on a Unix socket in its temp dir, and is gone (directory included) after
`cleanup()`.

As root (CI containers), PostgreSQL refuses to run, so every server command goes through
`runuser -u USER --` with USER `postgres` when it exists, else `nobody`; the temp dir is chowned
to USER. Otherwise commands run as the current user. The database superuser has USER's name.

Only the standard library is imported at module level: `python3 tests/pg_server.py` prints the
bindir it would use (exit 1 when there is none), which `.ci/run` uses before any venv exists.
psycopg is imported only by the methods that connect.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg

# When set, the only place searched for server binaries (tests use it to hide them).
BINDIR_ENV = "RUNSENSE_TEST_PG_BINDIR"
SERVER_PROGRAMS = ("initdb", "pg_ctl", "postgres")
PG_CTL_WAIT = 60  # seconds pg_ctl waits for a start or stop (-t)
COMMAND_TIMEOUT = 120  # seconds any server command may take before we give up on it

# The postgresql.conf additions: a throwaway server, so speed over durability. fsync=off survives
# a server crash (the OS still holds the data), only not an OS crash. synchronous_commit stays on:
# with fsync off it costs a write() per commit (no measurable difference over 3,000 commits), and
# off it would let kill() lose acknowledged commits, which "nothing committed is lost" tests need.
SETTINGS = """
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = '{socket_dir}'
fsync = off
full_page_writes = off
max_connections = 200
shared_buffers = 32MB
max_parallel_workers_per_gather = 0
logging_collector = off
"""

# Runs beside each server and stops it when the process that started it dies without cleaning up
# (an xdist worker killed by SIGKILL, a crash): its stdin is a pipe from that process, so EOF on
# stdin means "owner gone". argv: the stop command as JSON, then the temp dir to remove.
_WATCHDOG = """
import json, shutil, subprocess, sys
sys.stdin.buffer.read()
subprocess.run(json.loads(sys.argv[1]), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
               timeout=90, check=False)
shutil.rmtree(sys.argv[2], ignore_errors=True)
"""


class PgServerError(RuntimeError):
    """A server command failed; the message carries its output and the tail of the server log."""


def _has_server_programs(directory: Path) -> bool:
    return all(os.access(directory / name, os.X_OK) for name in SERVER_PROGRAMS)


def _version_key(directory: Path) -> tuple[int, ...]:
    """`/usr/lib/postgresql/15/bin` → (15,), so 15 sorts above 9.6 (numbers, not strings)."""
    return tuple(int(part) for part in re.findall(r"\d+", directory.parent.name))


def find_bindir() -> Path | None:
    """The directory holding initdb, pg_ctl and postgres, or None when PostgreSQL isn't installed.

    Looks at `$RUNSENSE_TEST_PG_BINDIR` only, when set; else `pg_config --bindir` (Debian's
    libpq-dev ships pg_config without the server, hence the check for the programs), then
    `/usr/lib/postgresql/*/bin` newest version first, then the directory of `pg_ctl` on PATH.
    """
    override = os.environ.get(BINDIR_ENV)
    if override is not None:
        return Path(override) if _has_server_programs(Path(override)) else None
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            output = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
            if output:
                candidates.append(Path(output))
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key, reverse=True)
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl:
        candidates.append(Path(pg_ctl).resolve().parent)
    return next((path for path in candidates if _has_server_programs(path)), None)


def postgres_unavailable() -> str | None:
    """Why PostgreSQL tests cannot run here (one line), or None when they can."""
    try:
        import psycopg  # noqa: F401
    except ImportError as exc:
        return f"psycopg is not importable ({exc}); install it: pip install -e '.[postgres]'"
    if find_bindir() is None:
        where = (
            f"${BINDIR_ENV}={os.environ[BINDIR_ENV]}"
            if BINDIR_ENV in os.environ
            else "pg_config --bindir, /usr/lib/postgresql/*/bin, PATH"
        )
        return (
            f"PostgreSQL server binaries (initdb, pg_ctl, postgres) not found in {where}; "
            "install them, e.g. apt-get install postgresql"
        )
    return None


def server_user() -> str:
    """Who runs the server: the current user, or as root `postgres` if it exists, else `nobody`."""
    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid()).pw_name
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return "nobody"
    return "postgres"


def _port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A free TCP port below Linux's ephemeral range (32768+), so that no client connection's local
    port can take it while the server is down for a restart."""
    for _ in range(200):
        port = random.randint(15000, 32767)
        if _port_is_free(port):
            return port
    raise PgServerError("no free TCP port found on 127.0.0.1 between 15000 and 32767")


def _process_state(pid: int) -> str | None:
    """'Z' for a zombie, another letter (or '?' off Linux) for a live process, None when gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return None
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return "?"


class PgServer:
    """One PostgreSQL server in its own temp dir. Use as a context manager, or `start()` then
    `cleanup()`. Between those: `restart()`, `stop()`/`start()` and `kill()`/`start()` keep the
    data and the port, so URLs handed out stay valid."""

    def __init__(self, bindir: Path | None = None, name: str = "runsense-pg") -> None:
        found = bindir or find_bindir()
        if found is None:
            raise PgServerError(postgres_unavailable() or "PostgreSQL server binaries not found")
        self.bindir = found
        self.user = server_user()
        self.port = 0
        self.base = Path(tempfile.mkdtemp(prefix=f"{name}-"))
        self.data_dir = self.base / "data"
        self.socket_dir = self.base  # the .s.PGSQL.PORT socket lives here
        self.log_path = self.base / "server.log"
        self._watchdog: subprocess.Popen[bytes] | None = None
        if os.geteuid() == 0:
            self._as_user = [shutil.which("runuser") or "/usr/sbin/runuser", "-u", self.user, "--"]
            shutil.chown(self.base, user=self.user)
        else:
            self._as_user = []

    def __enter__(self) -> PgServer:
        try:
            self.start()
        except BaseException:
            self.cleanup()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.cleanup()

    # -- URLs and databases ------------------------------------------------------------------

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{dbname}"

    def connect(self, dbname: str = "postgres", **kwargs: Any) -> psycopg.Connection[Any]:
        """A psycopg connection over TCP (autocommit unless told otherwise)."""
        import psycopg

        kwargs.setdefault("autocommit", True)
        kwargs.setdefault("connect_timeout", 10)
        return psycopg.connect(self.url(dbname), **kwargs)

    def create_database(self, name: str, template: str = "template0") -> str:
        """CREATE DATABASE name from `template` (empty template0 by default); returns its URL."""
        from psycopg import sql

        with self.connect() as connection:
            connection.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                    sql.Identifier(name), sql.Identifier(template)
                )
            )
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """DROP DATABASE, disconnecting whoever still uses it (a test's leftover daemon, say)."""
        from psycopg import sql

        with self.connect() as connection:
            connection.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    # -- Lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """initdb on first use, then `pg_ctl -w start`. The first start tries up to three ports
        (another process may take a free port before the server binds it); later starts reuse
        the port clients already know."""
        first = not self.data_dir.exists()
        if first:
            self._initdb()
            self._start_watchdog()
        for attempt in range(3 if first else 1):
            if first:
                self.port = free_port()
                self._write_settings()
            log_offset = self._log_size()
            result = self._pg_ctl("start", "-l", str(self.log_path), check=False)
            if result.returncode == 0:
                return
            new_log = self._log_text()[log_offset:]
            if first and attempt < 2 and "could not bind" in new_log:
                continue
            raise self._error("pg_ctl start", result)

    def restart(self) -> None:
        """`pg_ctl -m fast restart`: open sessions are terminated (their clients get an
        OperationalError and must reconnect), committed data stays, same port."""
        self._pg_ctl("restart", "-m", "fast", "-l", str(self.log_path))

    def stop(self) -> None:
        """`pg_ctl -m immediate stop` (no shutdown checkpoint: nothing here needs durability)."""
        if self.is_running():
            self._pg_ctl("stop", "-m", "immediate")

    def kill(self) -> None:
        """SIGKILL the postmaster and all its backends at once, like a machine losing power;
        `start()` then runs crash recovery."""
        pid = self._postmaster_pid()
        if pid is None or not self._is_our_postmaster(pid):
            return  # not running (a stale pid file's pid may belong to another process by now)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)  # pg_ctl makes the postmaster a process group leader
        deadline = time.monotonic() + 10
        while _process_state(pid) not in (None, "Z"):
            if time.monotonic() > deadline:
                raise PgServerError(f"postmaster {pid} still alive 10 s after SIGKILL")
            time.sleep(0.02)
        if _process_state(pid) == "Z":
            # An init that is slow to reap orphans (some containers) leaves a zombie whose pid
            # still answers kill(pid, 0): PostgreSQL would take the stale lock files for a live
            # server. A real crash leaves no process behind, so remove them.
            for lock in [
                self.data_dir / "postmaster.pid",
                *self.socket_dir.glob(".s.PGSQL.*.lock"),
            ]:
                lock.unlink(missing_ok=True)

    def is_running(self) -> bool:
        """Whether the postmaster runs (from its pid file and /proc: no subprocess, so cheap)."""
        if not Path("/proc/self").exists():
            return self.data_dir.exists() and self._pg_ctl("status", check=False).returncode == 0
        pid = self._postmaster_pid()
        return pid is not None and self._is_our_postmaster(pid)

    def cleanup(self) -> None:
        """Stop the server if it runs, remove its temp dir, end the watchdog. Safe to repeat."""
        try:
            if self.data_dir.exists():
                try:
                    self.stop()
                except PgServerError:
                    self.kill()
        finally:
            shutil.rmtree(self.base, ignore_errors=True)
            if self._watchdog is not None:
                self._watchdog.kill()
                self._watchdog.wait(timeout=30)
                self._watchdog = None

    # -- Internals ---------------------------------------------------------------------------

    def _initdb(self) -> None:
        self._run(
            [
                str(self.bindir / "initdb"),
                "--pgdata",
                str(self.data_dir),
                "--auth=trust",
                f"--username={self.user}",
                "--encoding=UTF8",
                "--no-locale",
                "--no-sync",
            ],
            "initdb",
        )
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write("\n# runsense tests (tests/pg_server.py)\ninclude 'runsense_test.conf'\n")

    def _write_settings(self) -> None:
        path = self.data_dir / "runsense_test.conf"
        path.write_text(SETTINGS.format(port=self.port, socket_dir=self.socket_dir))
        if os.geteuid() == 0:
            shutil.chown(path, user=self.user)

    def _start_watchdog(self) -> None:
        stop = [*self._as_user, str(self.bindir / "pg_ctl"), "stop", "-D", str(self.data_dir)]
        self._watchdog = subprocess.Popen(
            [
                sys.executable,
                "-c",
                _WATCHDOG,
                json.dumps([*stop, "-m", "immediate"]),
                str(self.base),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C meant for pytest must not end it first
        )

    def _pg_ctl(
        self, command: str, *args: str, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        argv = [str(self.bindir / "pg_ctl"), command, "-D", str(self.data_dir), *args]
        if command != "status":
            argv += ["-w", "-t", str(PG_CTL_WAIT)]
        return self._run(argv, f"pg_ctl {command}", check=check)

    def _run(
        self, argv: list[str], what: str, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        # PG* variables (PGDATA, PGPORT, PGHOST...) from the caller's shell must not redirect us.
        env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
        env["LC_ALL"] = "C"
        try:
            result = subprocess.run(
                [*self._as_user, *argv],
                cwd=self.base,  # the server user may not be allowed into the caller's cwd
                env=env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=COMMAND_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise PgServerError(
                f"{what} did not finish within {COMMAND_TIMEOUT} s{self._log_tail()}"
            ) from exc
        except OSError as exc:
            raise PgServerError(f"{what} could not run: {exc}") from exc
        if check and result.returncode != 0:
            raise self._error(what, result)
        return result

    def _error(self, what: str, result: subprocess.CompletedProcess[str]) -> PgServerError:
        output = (result.stdout + result.stderr).strip()
        return PgServerError(
            f"{what} failed (exit {result.returncode}) in {self.base}:\n{output}{self._log_tail()}"
        )

    def _postmaster_pid(self) -> int | None:
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (FileNotFoundError, ValueError):
            return None

    def _is_our_postmaster(self, pid: int) -> bool:
        """Whether `pid` is this server's postmaster: its command line names our data dir
        (pg_ctl starts it with -D). Without /proc, trust the pid file."""
        if not Path("/proc/self").exists():
            return True
        try:
            command_line = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return False
        return str(self.data_dir).encode() in command_line.split(b"\0")

    def _log_size(self) -> int:
        return len(self._log_text())

    def _log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def _log_tail(self, lines: int = 20) -> str:
        tail = self._log_text().splitlines()[-lines:]
        return "\n--- server log (last lines) ---\n" + "\n".join(tail) if tail else ""


if __name__ == "__main__":
    bindir = find_bindir()
    if bindir is None:
        sys.exit(1)
    print(bindir)
