"""Environment faults (SPEC §9, round 2): a home runsense cannot read or write, a dangling link
for its database, a full disk, rows that decode to nothing runsense knows. Each is one clear line
naming the path and what to do, exit 2, no traceback, and no run left in progress by runsense.

Permission cases run the CLI without the capabilities that let root ignore file modes (dropped
from the bounding set before exec); the read-only and full-disk cases mount a small tmpfs or a
read-only bind mount, and skip where this machine does not allow mounting.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sqlite3
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.processes import RUNSENSE

PROJECT = """
from runsense_cli import Definitions, job, op

@op
def work():
    return 1

@job
def ok_job():
    work()

defs = Definitions(jobs=[ok_job])
"""

PR_CAPBSET_DROP = 24
CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 1, 2


def _without_file_mode_override() -> None:
    """Run in the child before exec: root keeps its uid but loses the power to ignore modes."""
    if os.geteuid() == 0:
        libc = ctypes.CDLL(None, use_errno=True)
        for cap in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
            libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)


def runsense(
    home: Path, project: Path, *args: str, plain: bool = False
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RUNSENSE_HOME": str(home), "COLUMNS": "200", "NO_COLOR": "1"}
    return subprocess.run(
        [*RUNSENSE, "-f", str(project), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=_without_file_mode_override if plain else None,
    )


def one_line(result: subprocess.CompletedProcess[str], *parts: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    for part in parts:
        assert part in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def defs(tmp_path: Path) -> Path:
    path = tmp_path / f"env_defs_{uuid.uuid4().hex[:8]}.py"
    path.write_text(PROJECT)
    return path


def modes_bind_here(tmp_path: Path) -> bool:
    """Whether a mode-000 directory stops a plain-run process here (not with every sandbox)."""
    locked = tmp_path / "probe"
    locked.mkdir()
    (locked / "f").write_text("x")
    locked.chmod(0)
    try:
        probe = subprocess.run(
            ["cat", str(locked / "f")],
            capture_output=True,
            preexec_fn=_without_file_mode_override,
        )
    finally:
        locked.chmod(0o700)
    return probe.returncode != 0


def run_ids(home: Path) -> list[str]:
    connection = sqlite3.connect(home / "runsense.db")
    try:
        return [row[0] for row in connection.execute("SELECT run_id FROM runs")]
    finally:
        connection.close()


def in_progress(home: Path) -> list[tuple[str, str]]:
    connection = sqlite3.connect(home / "runsense.db")
    try:
        return connection.execute(
            "SELECT run_id, status FROM runs WHERE status IN ('STARTING', 'STARTED')"
        ).fetchall()
    finally:
        connection.close()


@pytest.mark.parametrize("mode", [0o000, 0o100, 0o500])
def test_a_home_runsense_may_not_read_or_write_is_one_line(tmp_path: Path, defs: Path, mode: int):
    """Given a home used before, then made unreadable (000), not listable (100) or read-only
    (500), when a run is started and runs are listed, then each is one line naming the home and
    saying to fix its permissions (SQLite needs to write beside its database even to read it);
    with the modes back, the runs are all there and none is left in progress."""
    if not modes_bind_here(tmp_path):
        pytest.skip("file modes do not bind a process on this machine")
    home = tmp_path / "home"
    assert runsense(home, defs, "run", "ok_job").returncode == 0
    home.chmod(mode)
    try:
        ran = runsense(home, defs, "run", "ok_job", plain=True)
        line = one_line(ran, str(home))
        assert "permission" in line.lower() or "read-only" in line, line
        line = one_line(runsense(home, defs, "runs", "list", plain=True), str(home))
        assert "permission" in line.lower(), line
    finally:
        home.chmod(0o700)
    assert in_progress(home) == []
    listed = runsense(home, defs, "runs", "list")
    assert listed.stdout.count("ok_job") == 1, listed.stdout


def test_a_database_file_runsense_may_not_open_is_one_line(tmp_path: Path, defs: Path):
    if not modes_bind_here(tmp_path):
        pytest.skip("file modes do not bind a process on this machine")
    home = tmp_path / "home"
    assert runsense(home, defs, "run", "ok_job").returncode == 0
    database = home / "runsense.db"
    database.chmod(0)
    try:
        one_line(runsense(home, defs, "runs", "list", plain=True), str(database), "ermission")
    finally:
        database.chmod(0o600)


def test_a_dangling_link_for_the_database_is_one_line(tmp_path: Path, defs: Path):
    """Given `<home>/runsense.db` linking to a file in a directory that does not exist, commands
    say so in one line and create nothing."""
    home = tmp_path / "home"
    home.mkdir()
    target = tmp_path / "gone" / "runsense.db"
    (home / "runsense.db").symlink_to(target)
    one_line(runsense(home, defs, "run", "ok_job"), str(home / "runsense.db"))
    one_line(runsense(home, defs, "runs", "list"), str(home / "runsense.db"))
    assert not target.parent.exists()


def test_rows_that_decode_to_nothing_runsense_knows_are_the_damaged_database_line(
    tmp_path: Path, defs: Path
):
    """Given a run whose stored status is not one runsense knows (written by hand or by a broken
    tool), listing and showing runs is one line saying the database holds a row it cannot read."""
    home = tmp_path / "home"
    assert runsense(home, defs, "run", "ok_job").returncode == 0
    connection = sqlite3.connect(home / "runsense.db")
    connection.execute("UPDATE runs SET status = 'WEIRD'")
    connection.commit()
    connection.close()
    one_line(runsense(home, defs, "runs", "list"), "runsense.db")
    run_id = run_ids(home)[0]
    one_line(runsense(home, defs, "runs", "show", run_id), "runsense.db")


@contextlib.contextmanager
def mounted(target: Path, *commands: list[str]) -> Iterator[None]:
    """Run `mount` with each argument list (the target last), unmount at the end; skip where
    this machine does not let the tests mount (not root, a container without the capability)."""
    target.mkdir(exist_ok=True)
    done = 0
    try:
        for command in commands:
            mount = subprocess.run(["mount", *command, str(target)], capture_output=True, text=True)
            if mount.returncode != 0:
                pytest.skip(f"cannot mount here: {mount.stderr.strip()}")
            done += 1
        yield
    finally:
        if done:
            subprocess.run(["umount", "-l", str(target)], capture_output=True)


def test_a_read_only_file_system_is_one_line(tmp_path: Path, defs: Path):
    """Given a home on a file system mounted read-only (root cannot write there either), starting
    a run and listing runs are one line saying the home is read-only."""
    home = tmp_path / "home"
    assert runsense(home, defs, "run", "ok_job").returncode == 0
    with mounted(home, ["--bind", str(home)], ["-o", "remount,ro,bind"]):
        if os.access(home, os.W_OK) and _writable(home):
            pytest.skip("the bind mount did not become read-only here")
        line = one_line(runsense(home, defs, "run", "ok_job"), str(home))
        assert "read-only" in line, line
        one_line(runsense(home, defs, "runs", "list"), str(home), "read-only")
    assert in_progress(home) == []


def _writable(directory: Path) -> bool:
    try:
        (directory / ".probe").write_text("x")
    except OSError:
        return False
    (directory / ".probe").unlink()
    return True


def test_a_full_disk_is_one_line_and_leaves_no_run_in_progress(tmp_path: Path, defs: Path):
    """Given a home on a small file system that fills up, when runs are started until the disk
    is full, then the failing command is one line saying the disk is full, and no run is left
    STARTED or STARTING; once space is freed, runsense works again."""
    disk = tmp_path / "disk"
    with mounted(disk, ["-t", "tmpfs", "-o", "size=1m", "tmpfs"]):
        home = disk / "home"
        assert runsense(home, defs, "run", "ok_job").returncode == 0
        filler = disk / "filler"
        fd = os.open(filler, os.O_CREAT | os.O_WRONLY, 0o600)
        try:
            while os.write(fd, b"\0" * 4096):
                pass
        except OSError:
            pass  # full
        finally:
            os.close(fd)
        result = None
        for _ in range(50):  # whatever space is left goes first
            result = runsense(home, defs, "run", "ok_job")
            if result.returncode != 0:
                break
        assert result is not None
        line = one_line(result, "the disk is full")
        assert str(home) in line, line
        filler.unlink()  # (reading the database needs a little space too)
        assert in_progress(home) == []
        again = runsense(home, defs, "run", "ok_job")
        assert again.returncode == 0, again.stderr
        assert in_progress(home) == []
