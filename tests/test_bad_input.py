"""The bad-input catalogue: one clear line, exit code 2, no traceback, the database untouched."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from runsense_cli.cli import app
from runsense_cli.storage import SCHEMA_VERSION
from tests.helpers import PROJECT, db_dump

runner = CliRunner()

TWO_DEFS = PROJECT + "\nother = Definitions(jobs=[ok_job])\n"
DUPLICATE_JOBS = PROJECT.replace(
    "defs = Definitions(jobs=[ok_job, bad_job]", "defs = Definitions(jobs=[ok_job, ok_job]"
)


def setup_project(tmp_path: Path, source: str) -> list[str]:
    path = tmp_path / "proj" / f"bad_{abs(hash(source)) % 10**8}.py"
    path.parent.mkdir(exist_ok=True)
    path.write_text(source)
    return ["-f", str(path)]


def config_file(tmp_path: Path, name: str, text: str | None) -> str:
    path = tmp_path / name
    if text is not None:
        path.write_text(text)
    return str(path)


CASES = {
    "broken module (syntax)": (
        lambda t: [*setup_project(t, "def oops(:\n"), "jobs"],
        "syntax error",
    ),
    "exception at import": (
        lambda t: [*setup_project(t, "raise RuntimeError('no creds')\n"), "jobs"],
        "raised RuntimeError: no creds",
    ),
    "no Definitions": (
        lambda t: [*setup_project(t, "x = 1\n"), "jobs"],
        "has no Definitions object",
    ),
    "two Definitions": (lambda t: [*setup_project(t, TWO_DEFS), "jobs"], "2 Definitions objects"),
    "duplicate job names": (
        lambda t: [*setup_project(t, DUPLICATE_JOBS), "jobs"],
        "two jobs are named 'ok_job'",
    ),
    "missing -f file": (lambda t: ["-f", str(t / "nope.py"), "jobs"], "no such file"),
    "unknown job": (
        lambda t: [*setup_project(t, PROJECT), "run", "ok_jb"],
        "did you mean 'ok_job'",
    ),
    "unknown sensor": (
        lambda t: [*setup_project(t, PROJECT), "sensor", "start", "on_failur"],
        "unknown sensor 'on_failur'",
    ),
    "unknown op in config": (
        lambda t: [
            *setup_project(t, PROJECT),
            "run",
            "ok_job",
            "--config-json",
            '{"ops": {"x": {"config": {}}}}',
        ],
        "ops.x: job 'ok_job' has no op named 'x'",
    ),
    "missing config": (
        lambda t: [*setup_project(t, PROJECT), "run", "status_reporting_job"],
        "ops.status_report.config is missing",
    ),
    "wrong type in config": (
        lambda t: [
            *setup_project(t, PROJECT),
            "run",
            "status_reporting_job",
            "--config-json",
            '{"ops": {"status_report": {"config": {"job_name": 3}}}}',
        ],
        "ops.status_report.config.job_name: expected str",
    ),
    "unknown field in config": (
        lambda t: [
            *setup_project(t, PROJECT),
            "run",
            "status_reporting_job",
            "--config-json",
            '{"ops": {"status_report": {"config": {"job_name": "a", "extra": 1}}}}',
        ],
        "ops.status_report.config.extra: unknown field",
    ),
    "unreadable config file": (
        lambda t: [
            *setup_project(t, PROJECT),
            "run",
            "ok_job",
            "--config",
            config_file(t, "none.json", None),
        ],
        "cannot read config file",
    ),
    "malformed JSON config": (
        lambda t: [
            *setup_project(t, PROJECT),
            "run",
            "ok_job",
            "--config",
            config_file(t, "c.json", "{nope"),
        ],
        "is not valid JSON",
    ),
    "malformed TOML config": (
        lambda t: [
            *setup_project(t, PROJECT),
            "run",
            "ok_job",
            "--config",
            config_file(t, "c.toml", "a = = 1"),
        ],
        "is not valid TOML",
    ),
    "--config-json not JSON": (
        lambda t: [*setup_project(t, PROJECT), "run", "ok_job", "--config-json", "{x"],
        "--config-json is not valid JSON",
    ),
    "bad --tag": (
        lambda t: [*setup_project(t, PROJECT), "run", "ok_job", "--tag", "novalue"],
        "is not key=value",
    ),
    "unknown run status filter": (
        lambda t: [*setup_project(t, PROJECT), "runs", "list", "--status", "WEIRD"],
        "unknown status 'WEIRD'",
    ),
    "unknown run id": (
        lambda t: [*setup_project(t, PROJECT), "runs", "show", "ffffffff"],
        "no run id starts with",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("with_database", [False, True], ids=["no-db", "existing-db"])
def test_bad_input_gets_one_clear_line(case, with_database, tmp_path, home):
    make_args, expected = CASES[case]
    if with_database:
        setup = runner.invoke(app, [*setup_project(tmp_path, PROJECT), "run", "ok_job"])
        assert setup.exit_code == 0, setup.output
    before = db_dump(home)
    result = runner.invoke(app, make_args(tmp_path))
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert expected in lines[0]
    assert "Traceback" not in result.output
    assert db_dump(home) == before


def test_no_project_found(tmp_path, monkeypatch, home):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["jobs"])
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "Error: no runsense project found here (pass -f defs.py or -m module, or add "
        '[tool.runsense] module = "..." to pyproject.toml)'
    )
    assert not home.exists()


def test_malformed_pyproject(tmp_path, monkeypatch, home):
    (tmp_path / "pyproject.toml").write_text("[tool.runsense\nmodule = 'x'\n")
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["jobs"])
    assert result.exit_code == 2 and "is not valid TOML" in result.stderr
    assert "Traceback" not in result.output


def test_corrupt_database_is_left_byte_identical(tmp_path, home):
    home.mkdir()
    garbage = b"\x00\x01garbage" * 100
    (home / "runsense.db").write_bytes(garbage)
    result = runner.invoke(app, [*setup_project(tmp_path, PROJECT), "runs", "list"])
    assert result.exit_code == 2 and "is not a SQLite database" in result.stderr
    assert (home / "runsense.db").read_bytes() == garbage


def test_newer_schema_is_left_unchanged(tmp_path, home):
    runner.invoke(app, [*setup_project(tmp_path, PROJECT), "run", "ok_job"])
    connection = sqlite3.connect(home / "runsense.db")
    connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 7}")
    connection.close()
    before = db_dump(home)
    result = runner.invoke(app, [*setup_project(tmp_path, PROJECT), "run", "ok_job"])
    assert result.exit_code == 2 and f"schema version {SCHEMA_VERSION + 7}" in result.stderr
    assert db_dump(home) == before
