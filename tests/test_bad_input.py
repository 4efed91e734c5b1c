"""The bad-input catalogue (SPEC §9): one clear line, exit code 2, no traceback, database untouched.

Every case runs against several databases: none at all (it must not be created), one a project has
already used (its logical dump must not change), and for the storage cases a corrupt file, one with
a newer schema, and another program's SQLite file (left byte for byte as they were).
"""

from __future__ import annotations

import importlib.util
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from runsense_cli.cli import app
from runsense_cli.storage.schema import SCHEMA_VERSION
from tests.helpers import PROJECT, db_snapshot

runner = CliRunner()


@dataclass
class Env:
    """What a case needs to build its command line."""

    tmp_path: Path
    proj: Path  # the PROJECT module, also the one that filled an existing database
    write: Callable[[str], Path]  # conftest's `project` writer
    monkeypatch: pytest.MonkeyPatch

    def f(self, source: str | None = None) -> list[str]:
        return ["-f", str(self.write(source) if source is not None else self.proj)]

    def file(self, name: str, text: str | None = None) -> str:
        path = self.tmp_path / name
        if text is not None:
            path.write_text(text)
        return str(path)

    def chdir(self, pyproject: str | None = None, runsense_toml: str | None = None) -> None:
        directory = self.tmp_path / "cwd"
        directory.mkdir()
        if pyproject is not None:
            (directory / "pyproject.toml").write_text(pyproject)
        if runsense_toml is not None:
            (directory / "runsense.toml").write_text(runsense_toml)
        self.monkeypatch.chdir(directory)


@dataclass(frozen=True)
class Case:
    args: Callable[[Env], list[str]]
    expected: str  # a part of the one error line
    databases: tuple[str, ...] = ("absent", "used")


def run_with(config_json: str) -> Callable[[Env], list[str]]:
    return lambda e: [*e.f(), "run", "status_reporting_job", "--config-json", config_json]


def run_with_file(name: str, text: str | None) -> Callable[[Env], list[str]]:
    return run_with_file_for("ok_job", name, text)


def run_with_file_for(job: str, name: str, text: str | None) -> Callable[[Env], list[str]]:
    return lambda e: [*e.f(), "run", job, "--config", e.file(name, text)]


HUGE = "99999999999999999999"  # past SQLite's INTEGER range
NOT_UTF8 = b"\xff".decode("utf-8", "surrogateescape")  # how Python passes such an argv byte


def no_project(e: Env) -> list[str]:
    e.chdir()
    return ["jobs"]


def in_dir(pyproject: str | None = None, runsense_toml: str | None = None):
    def args(e: Env) -> list[str]:
        e.chdir(pyproject, runsense_toml)
        return ["jobs"]

    return args


def report_config(config: str) -> str:
    return '{"ops": {"status_report": {"config": ' + config + "}}}"


TWO_DEFS = PROJECT + "\nother = Definitions(jobs=[ok_job])\n"
DUPLICATE_JOBS = PROJECT.replace(
    "defs = Definitions(jobs=[ok_job, bad_job]",
    '@job(name="ok_job")\ndef another_job():\n    boom()\n\n'
    "defs = Definitions(jobs=[ok_job, bad_job, another_job]",
)
DUPLICATE_SENSORS = PROJECT.replace(
    "defs = Definitions(jobs=[ok_job, bad_job], sensors=[",
    '@run_failure_sensor(name="on_failure")\ndef another_sensor(context):\n    pass\n\n'
    "defs = Definitions(jobs=[ok_job, bad_job], sensors=[another_sensor, ",
)
BOTH_SCOPES = """
from runsense_cli import Definitions, job, op, run_failure_sensor

@op
def a():
    pass

@job
def j():
    a()

@run_failure_sensor(monitored_jobs=[j], monitor_all_code_locations=True)
def s(context):
    pass

defs = Definitions(jobs=[j], sensors=[s])
"""
STORAGE = ("not SQLite", "corrupt", "newer", "foreign")

CASES: dict[str, Case] = {
    # finding and loading the project
    "no project found": Case(no_project, "no runsense project found here"),
    "malformed pyproject.toml": Case(
        in_dir(pyproject="[tool.runsense\nmodule = 'x'\n"), "pyproject.toml is not valid TOML"
    ),
    "pyproject module not a name": Case(
        in_dir(pyproject='[tool.runsense]\nmodule = "my defs"\n'), "is not a module name"
    ),
    "runsense.toml without module": Case(
        in_dir(runsense_toml='name = "x"\n'), "runsense.toml has no `module"
    ),
    "-f to a missing file": Case(
        lambda e: ["-f", str(e.tmp_path / "nope.py"), "jobs"], "no such file"
    ),
    "-f to a non-Python file": Case(
        lambda e: ["-f", e.file("defs.txt", "x"), "jobs"], "is not a Python file"
    ),
    "-m to a missing module": Case(
        lambda e: ["-m", "no_such_module_here", "jobs"], "no module named 'no_such_module_here'"
    ),
    "module syntax error": Case(lambda e: [*e.f("def oops(:\n"), "jobs"], "syntax error in"),
    "exception at import": Case(
        lambda e: [*e.f("raise RuntimeError('no creds')\n"), "jobs"],
        "raised RuntimeError: no creds",
    ),
    "missing import inside the module": Case(
        lambda e: [*e.f("import no_such_package_xyz\n"), "jobs"],
        "raised ModuleNotFoundError: No module named 'no_such_package_xyz'",
    ),
    "no Definitions": Case(lambda e: [*e.f("x = 1\n"), "jobs"], "has no Definitions object"),
    "two Definitions": Case(
        lambda e: [*e.f(TWO_DEFS), "jobs"], "has 2 Definitions objects (defs, other)"
    ),
    "duplicate job names": Case(
        lambda e: [*e.f(DUPLICATE_JOBS), "jobs"], "two jobs are named 'ok_job'"
    ),
    "duplicate sensor names": Case(
        lambda e: [*e.f(DUPLICATE_SENSORS), "sensor", "list"], "two sensors are named 'on_failure'"
    ),
    "sensor with two scopes": Case(
        lambda e: [*e.f(BOTH_SCOPES), "jobs"], "monitor_all_code_locations"
    ),
    # names
    "unknown job": Case(
        lambda e: [*e.f(), "run", "ok_jb"], "unknown job 'ok_jb' (did you mean 'ok_job'"
    ),
    "unknown job, nothing close": Case(
        lambda e: [*e.f(), "run", "zzz"], "unknown job 'zzz' (`runsense jobs` lists them)"
    ),
    **{
        f"unknown sensor ({' '.join(command)})": Case(
            lambda e, command=command: [*e.f(), "sensor", *command],
            "unknown sensor 'on_failur' (did you mean 'on_failure'?)",
        )
        for command in (
            ("start", "on_failur"),
            ("stop", "on_failur"),
            ("tick", "on_failur"),
            ("preview", "on_failur"),
            ("cursor", "on_failur", "--set", "0"),
            ("ticks", "on_failur"),
            ("failures", "on_failur"),
            ("retry", "on_failur", "--all"),
        )
    },
    "unknown run status filter": Case(
        lambda e: [*e.f(), "runs", "list", "--status", "WEIRD"], "unknown status 'WEIRD'"
    ),
    "unknown run id": Case(
        lambda e: [*e.f(), "runs", "show", "ffffffff"], "no run id starts with 'ffffffff'"
    ),
    "run id not UTF-8": Case(
        lambda e: [*e.f(), "runs", "show", NOT_UTF8], "no run id starts with '\ufffd'"
    ),
    "preview of a run id not UTF-8": Case(
        lambda e: [*e.f(), "sensor", "preview", "on_failure", "--run", NOT_UTF8],
        "no run id starts with '\ufffd'",
    ),
    "empty run id": Case(lambda e: [*e.f(), "runs", "show", " "], "an empty run id"),
    "preview of an unknown run": Case(
        lambda e: [*e.f(), "sensor", "preview", "on_failure", "--run", "ffff"],
        "no run id starts with 'ffff'",
    ),
    # run config
    "config: unknown op": Case(
        lambda e: [*e.f(), "run", "ok_job", "--config-json", '{"ops": {"x": {"config": {}}}}'],
        "ops.x: job 'ok_job' has no op named 'x' (its ops are: double, ok_op)",
    ),
    "config: unknown field": Case(
        run_with(report_config('{"job_name": "a", "extra": 1}')),
        "ops.status_report.config.extra: unknown field",
    ),
    "config: missing field": Case(
        run_with(report_config("{}")),
        "ops.status_report.config.job_name: missing required field (str)",
    ),
    "config: missing op config": Case(
        lambda e: [*e.f(), "run", "status_reporting_job"],
        "ops.status_report.config is missing",
    ),
    "config: wrong type": Case(
        run_with(report_config('{"job_name": 3}')),
        "ops.status_report.config.job_name: expected str, got int 3",
    ),
    "config: bool for a str": Case(
        run_with(report_config('{"job_name": true}')),
        "ops.status_report.config.job_name: expected str, got bool True",
    ),
    "config: unknown top-level key": Case(
        lambda e: [*e.f(), "run", "ok_job", "--config-json", '{"resources": {}}'],
        "unknown key 'resources' in run config",
    ),
    "config: op entry not {config: ...}": Case(
        run_with('{"ops": {"status_report": {"cfg": {}}}}'),
        'ops.status_report: expected {"config": ...}',
    ),
    "config file missing": Case(run_with_file("none.json", None), "cannot read config file"),
    "config file is a directory": Case(
        lambda e: [*e.f(), "run", "ok_job", "--config", str(e.tmp_path)],
        "cannot read config file",
    ),
    "config file malformed JSON": Case(
        run_with_file("c.json", "{nope"), "c.json is not valid JSON"
    ),
    "config file malformed TOML": Case(
        run_with_file("c.toml", "a = = 1"), "c.toml is not valid TOML"
    ),
    "config file not a mapping": Case(
        run_with_file("c.json", "[1, 2]"), "must hold a mapping at the top level"
    ),
    "config file not UTF-8": Case(
        lambda e: [*e.f(), "run", "ok_job", "--config", write_bytes(e, "c.toml", b"\xff\xfe")],
        "is not UTF-8 text",
    ),
    "config file unknown extension": Case(
        run_with_file("c.ini", "{}"), "must end in .json, .toml or .yaml"
    ),
    "--config-json not JSON": Case(
        lambda e: [*e.f(), "run", "ok_job", "--config-json", "{x"],
        "--config-json is not valid JSON",
    ),
    "--config-json not an object": Case(
        lambda e: [*e.f(), "run", "ok_job", "--config-json", "[1]"],
        "--config-json must be a JSON object",
    ),
    # run config must be JSON: no dates, no NaN or Infinity, bounded nesting
    "config file with a TOML date": Case(
        run_with_file_for(
            "status_reporting_job",
            "c.toml",
            "[ops.status_report.config]\njob_name = 2024-01-02\n",
        ),
        'c.toml: ops.status_report.config.job_name: a date is not a JSON value (quote it: "2024-01-02")',
    ),
    "config file with a TOML nan": Case(
        run_with_file_for(
            "status_reporting_job", "c.toml", "[ops.status_report.config]\njob_name = nan\n"
        ),
        "c.toml: ops.status_report.config.job_name: nan is not allowed (JSON has no NaN",
    ),
    "--config-json with NaN": Case(
        run_with(report_config('{"job_name": NaN}')),
        "--config-json: ops.status_report.config.job_name: nan is not allowed",
    ),
    "--config-json with -Infinity": Case(
        run_with(report_config('{"job_name": [1, -Infinity]}')),
        "--config-json: ops.status_report.config.job_name[1]: -inf is not allowed",
    ),
    "--config-json nested 30,000 deep": Case(
        run_with('{"a": ' + "[" * 30_000 + "]" * 30_000 + "}"),
        "--config-json: nested more than 100 levels deep (flatten it)",
    ),
    "--config-json nested 150 deep": Case(
        run_with('{"a": ' * 150 + "1" + "}" * 150),
        "--config-json: a.a.a.a.a.a.a.a.a.a.a.a",
    ),
    "config file nested 30,000 deep": Case(
        run_with_file("deep.json", '{"a": ' + "[" * 30_000 + "]" * 30_000 + "}"),
        "deep.json: nested more than 100 levels deep",
    ),
    # numbers beyond what SQLite stores
    "--limit huge (runs list)": Case(
        lambda e: [*e.f(), "runs", "list", "--limit", HUGE],
        f"Invalid value for '--limit' / '-n': {HUGE} is not in the range 0<=x<=",
    ),
    "--limit huge (sensor ticks)": Case(
        lambda e: [*e.f(), "sensor", "ticks", "on_failure", "--limit", HUGE],
        f"Invalid value for '--limit' / '-n': {HUGE} is not in the range",
    ),
    "--limit huge (sensor preview)": Case(
        lambda e: [*e.f(), "sensor", "preview", "on_failure", "--limit", HUGE],
        f"Invalid value for '--limit': {HUGE} is not in the range",
    ),
    "--event huge (sensor retry)": Case(
        lambda e: [*e.f(), "sensor", "retry", "always_raises", "--event", HUGE],
        f"Invalid value for '--event': {HUGE} is not in the range 0<=x<=",
    ),
    "--set huge (sensor cursor)": Case(
        lambda e: [*e.f(), "sensor", "cursor", "on_failure", "--set", HUGE],
        f"Invalid value for '--set': {HUGE} is not in the range",
    ),
    "--interval huge (daemon)": Case(
        lambda e: [*e.f(), "daemon", "--interval", "1e300"],
        "Invalid value for '--interval': 1e+300 is not in the range 0.01<=x<=3600",
    ),
    "--page-size huge (daemon)": Case(
        lambda e: [*e.f(), "daemon", "--page-size", HUGE, "--interval", "1e300"],
        f"Invalid value for '--page-size': {HUGE} is not in the range",
    ),
    # other options
    "reserved --tag": Case(
        lambda e: [*e.f(), "run", "ok_job", "--tag", "runsense/depth=x"],
        "--tag 'runsense/depth=x': tags starting with 'runsense/' are runsense's own",
    ),
    "bad --tag": Case(
        lambda e: [*e.f(), "run", "ok_job", "--tag", "novalue"], "--tag 'novalue' is not key=value"
    ),
    "--tag with an empty key": Case(
        lambda e: [*e.f(), "run", "ok_job", "--tag", "=v"], "--tag '=v' is not key=value"
    ),
    "start with no sensor named": Case(
        lambda e: [*e.f(), "sensor", "start"], "name at least one sensor, or pass --all"
    ),
    "stop with names and --all": Case(
        lambda e: [*e.f(), "sensor", "stop", "on_failure", "--all"], "not both"
    ),
    "tick a stopped sensor": Case(
        lambda e: [*e.f(), "sensor", "tick", "on_failure", "report_status_sensor"],
        "is stopped (start it first: runsense sensor start ",
    ),
    "cursor beyond the newest event": Case(
        lambda e: [*e.f(), "sensor", "cursor", "on_failure", "--set", "999999"],
        "event 999999 does not exist yet",
    ),
    "cursor --set and --from-now": Case(
        lambda e: [*e.f(), "sensor", "cursor", "on_failure", "--set", "1", "--from-now"],
        "give --set or --from-now, not both",
    ),
    "retry without --all or --event": Case(
        lambda e: [*e.f(), "sensor", "retry", "always_raises"], "give --all or --event ID"
    ),
    "retry an event that is not parked": Case(
        lambda e: [*e.f(), "sensor", "retry", "always_raises", "--event", "999999"],
        "no parked reaction for event 999999",
    ),
    "--home is a file": Case(
        lambda e: [*e.f(), "--home", e.file("a-file", "x"), "run", "ok_job"],
        "cannot create the runsense home",
    ),
    # the database itself
    **{
        f"{kind} database ({' '.join(command)})": Case(
            lambda e, command=command: [*e.f(), *command], expected, (kind,)
        )
        for kind, expected in (
            ("not SQLite", "runsense.db is not a SQLite database"),
            ("corrupt", "is not a usable runsense database"),
            ("newer", f"has schema version {SCHEMA_VERSION + 7}, newer than this runsense"),
            ("foreign", "is a SQLite database of another program"),
        )
        for command in (("runs", "list"), ("run", "ok_job"), ("sensor", "list"))
    },
}

if importlib.util.find_spec("yaml") is None:
    CASES["YAML config without PyYAML"] = Case(
        run_with_file("c.yaml", "ops: {}\n"), "reading YAML config needs PyYAML"
    )


def write_bytes(e: Env, name: str, data: bytes) -> str:
    path = e.tmp_path / name
    path.write_bytes(data)
    return str(path)


def make_database(kind: str, env: Env, home: Path) -> None:
    """Leave `home` with no database, a used one, or one runsense must refuse."""
    if kind == "absent":
        return
    if kind in ("used", "newer"):
        # Runs, events, sensors, a tick, a parked reaction: everything a command could touch.
        for args in (
            ["sensor", "start", "on_failure", "always_raises"],
            ["run", "ok_job"],
            ["run", "bad_job"],
            ["sensor", "tick"],
        ):
            runner.invoke(app, [*env.f(), *args])
        assert db_snapshot(home) is not None
        if kind == "newer":
            connection = sqlite3.connect(home / "runsense.db")
            connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 7}")
            connection.close()
        return
    home.mkdir(mode=0o700)
    path = home / "runsense.db"
    if kind == "not SQLite":
        path.write_bytes(b"\x00\x01garbage" * 500)
    elif kind == "corrupt":  # the right header, then garbage
        path.write_bytes(b"SQLite format 3\x00" + b"\x00\x01garbage" * 500)
    elif kind == "foreign":
        connection = sqlite3.connect(path)
        connection.execute("CREATE TABLE notes (body TEXT)")
        connection.execute("INSERT INTO notes VALUES ('mine')")
        connection.commit()
        connection.close()
    else:  # pragma: no cover
        raise AssertionError(kind)


PARAMS = [
    pytest.param(name, database, id=f"{name} [{database}]")
    for name, case in CASES.items()
    for database in case.databases
]


@pytest.mark.parametrize(("case", "database"), PARAMS)
def test_bad_input_gets_one_clear_line(case, database, tmp_path, home, project, monkeypatch):
    env = Env(tmp_path, project(PROJECT), project, monkeypatch)
    make_database(database, env, home)
    before = db_snapshot(home)
    raw_before = (home / "runsense.db").read_bytes() if database in STORAGE else None
    args = CASES[case].args(env)
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert CASES[case].expected in lines[0], lines[0]
    assert "Traceback" not in result.output
    assert db_snapshot(home) == before
    if raw_before is not None:
        assert (home / "runsense.db").read_bytes() == raw_before


def test_the_catalogue_is_big_enough():
    assert len(CASES) >= 15
