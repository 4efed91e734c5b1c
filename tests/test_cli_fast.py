"""The fast path (cli/fast.py): plain `runsense run` and `runs list` command lines, read without
Typer, mean exactly what the Typer app reads in them; everything else is left to the Typer app;
and both give the same output and exit code, as real processes.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.main import get_command

from runsense_cli.cli import app, fast
from runsense_cli.cli.options import GLOBAL_OPTIONS
from tests.helpers import PROJECT

REPO = Path(__file__).resolve().parent.parent
HELP = {"--help", "-h"}


def click_params(argv: list[str]) -> tuple[tuple[str, ...], dict, dict]:
    """The command's words, the root group's parameters and the command's, as the Typer app
    (its click commands) parses `argv`."""
    root = get_command(app)
    ctx = root.make_context("runsense", list(argv))
    root_params = {k: v for k, v in ctx.params.items() if k != "version"}
    args = [*ctx._protected_args, *ctx.args]
    words: list[str] = []
    group, parent = root, ctx
    while True:
        name, command, args = group.resolve_command(parent, args)
        words.append(name)
        sub = command.make_context(name, args, parent=parent)
        if not hasattr(command, "resolve_command"):
            return tuple(words), root_params, dict(sub.params)
        group, parent, args = command, sub, [*sub._protected_args, *sub.args]


def normalized(params: dict) -> dict:
    """Typer's conversions, which it applies before calling the command: a repeatable option
    given no value is None, values lists; a Path stays its text here."""
    out = {}
    for key, value in params.items():
        if isinstance(value, tuple):
            value = list(value) or None
        out[key] = value
    return out


PLAIN = [
    ["run", "ok_job"],
    ["-f", "defs.py", "run", "ok_job"],
    ["--file=defs.py", "--home", "h", "-v", "run", "ok_job"],
    ["run", "ok_job", "-f", "defs.py", "--home=h", "--database-url", "sqlite:///x.db"],
    ["-m", "pkg.defs", "run", "ok_job", "-m", "other.defs", "--verbose"],
    ["run", "--tag", "a=1", "ok_job", "-t", "b=2", "--tag=c=3=3", "--queue", "--json"],
    ["run", "ok_job", "--config-json", '{"ops": {}}', "-c", "run.toml", "--config", "c.json"],
    ["run", "ok_job", "--config-json=-1", "--tag", "-x", "--json", "--json"],
    ["run", ""],
    ["-f", "--help", "run", "ok_job"],  # click takes `--help` as -f's value, as we do
    ["runs", "list"],
    ["runs", "list", "--job", "ok_job", "--status", "failed", "--limit", "5", "--json"],
    ["--home", "h", "runs", "list", "-n", "0", "--home", "h2", "--limit=007"],
    ["runs", "list", "--limit", "9223372036854775807", "--job="],
]


@pytest.mark.parametrize("argv", PLAIN, ids=" ".join)
def test_plain_command_lines_read_as_click_reads_them(argv):
    call = fast.parse(argv)
    assert call is not None
    words, root, params = click_params(argv)
    assert call.command == words
    assert call.root == root
    assert normalized(call.params) == normalized(params)


LEFT_TO_TYPER = [
    [],
    ["--help"],
    ["-h"],
    ["--version"],
    ["run", "--help"],
    ["run", "ok_job", "-h"],
    ["runs", "list", "--help"],
    ["run"],
    ["run", "a", "b"],
    ["run", "-"],
    ["run", "--", "ok_job"],
    ["run", "ok_job", "--bogus"],
    ["run", "ok_job", "-vt", "a=1"],
    ["run", "ok_job", "-ta=1"],
    ["run", "ok_job", "-t=a=1"],
    ["-f=defs.py", "run", "ok_job"],
    ["run", "ok_job", "--json=1"],
    ["run", "ok_job", "--tag"],
    ["-f"],
    ["--verbose=1", "run", "ok_job"],
    ["runs", "--home", "h", "list"],
    ["runs", "list", "extra"],
    ["runs", "list", "--limit", "x"],
    ["runs", "list", "--limit", "-1"],
    ["runs", "list", "--limit", " 5"],
    ["runs", "list", "--limit", "1_000"],
    ["runs", "list", "--limit", "9223372036854775808"],
    ["runs", "list", "--limit", "٣"],
    ["runs", "show", "abc"],
    ["runs"],
    ["rn", "x"],
    ["sensor", "list"],
    ["jobs"],
    ["--install-completion"],
]


@pytest.mark.parametrize("argv", LEFT_TO_TYPER, ids=lambda a: " ".join(a) or "(none)")
def test_anything_else_is_left_to_the_typer_app(argv):
    assert fast.parse(argv) is None


def test_an_unreadable_config_file_is_left_to_the_typer_app(tmp_path):
    config = tmp_path / "run.json"
    config.write_text("{}")
    assert fast.parse(["run", "ok_job", "--config", str(config)]) is not None
    config.chmod(0)
    try:
        if os.access(config, os.R_OK):
            pytest.skip("running as root: every file is readable")
        assert fast.parse(["run", "ok_job", "--config", str(config)]) is None
    finally:
        config.chmod(0o600)


def test_completion_requests_are_left_to_the_typer_app(monkeypatch):
    monkeypatch.setenv("_RUNSENSE_COMPLETE", "bash_complete")
    assert fast.main(["run", "ok_job"]) is None


@pytest.mark.parametrize("words", list(fast.COMMANDS))
def test_the_tables_list_every_option_of_the_typer_commands(words):
    """A Typer option the fast path does not know only makes it fall back; a spelling it knows
    that the Typer command dropped would be read differently, so they must be the same."""
    root = get_command(app)
    command = root
    for word in words:
        command = command.get_command(root.make_context("runsense", list(words)), word)
    options, argument = fast.COMMANDS[words]
    spellings: dict[str, tuple[str, str]] = {}
    arguments = []
    for param in command.params:
        if param.param_type_name == "argument":
            arguments.append(param.name)
            continue
        kind = fast.FLAG if param.is_flag else fast.VALUES if param.multiple else fast.VALUE
        for spelling in [*param.opts, *param.secondary_opts]:
            if spelling not in HELP:
                spellings[spelling] = (param.name, kind)
    assert options == spellings
    assert arguments == ([argument] if argument else [])
    assert {o.param_name for o in GLOBAL_OPTIONS} <= {key for key, _ in options.values()}
    defaults = {p.name: p.default for p in command.params if p.name in fast.DEFAULTS}
    assert {name: fast.DEFAULTS[name] for name in defaults} == normalized(defaults)


# -- the same output either way, as real processes -------------------------------------------

TYPER = "import sys; from runsense_cli.cli import app; sys.argv[0] = 'runsense'; app(prog_name='runsense')"
MODULES = (
    "import sys, atexit\n"
    "atexit.register(lambda: sys.stderr.write('\\nMODULES ' + ' '.join(sorted(\n"
    "    m for m in ('typer', 'rich', 'click', 'psycopg') if m in sys.modules)) + '\\n'))\n"
    "from runsense_cli.cli import main\n"
    "sys.argv[0] = 'runsense'\n"
    "main()\n"
)


def process(argv: list[str], env: dict[str, str], typer_app: bool = False):
    code = TYPER if typer_app else MODULES
    return subprocess.run(
        [sys.executable, "-c", code, *argv],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def masked(text: str) -> str:
    """Run ids and times vary between two runs of the same command."""
    text = re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "<id>", text)
    text = re.sub(r"\b[0-9a-f]{8}\b", "<id8>", text)
    text = re.sub(r"\d+(\.\d+)?(ms|s)\b", "<t>", text)
    text = re.sub(r"\d\d:\d\d:\d\d(\.\d+)?", "<clock>", text)
    return re.sub(r'"\d{4}-\d\d-\d\dT[^"]*"|\d+\.\d+(?=[,\n])', "<time>", text)


@pytest.fixture
def env(home: Path) -> dict[str, str]:
    environment = dict(os.environ, RUNSENSE_HOME=str(home))
    for name in ("NO_COLOR", "FORCE_COLOR", "RUNSENSE_DATABASE_URL", "_RUNSENSE_COMPLETE"):
        environment.pop(name, None)
    environment["PYTHONPATH"] = str(REPO)
    return environment


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest, env: dict[str, str]) -> str:
    """The home's SQLite file, or a fresh PostgreSQL database through RUNSENSE_DATABASE_URL."""
    if request.param == "postgres":
        env["RUNSENSE_DATABASE_URL"] = request.getfixturevalue("pg_url")
    return request.param


@pytest.mark.slow
def test_the_fast_path_prints_what_the_typer_app_prints(project, env, database):
    path = str(project(PROJECT))
    other = str(project("raise SystemExit('not this one')\n"))
    cases = [
        ["-f", path, "runs", "list"],  # no runs yet: one line, no table
        ["-f", path, "run", "ok_job"],
        ["-f", path, "run", "ok_job", "--tag", "team=data", "--json"],
        ["-f", path, "run", "bad_job"],
        ["-f", path, "-v", "run", "bad_job"],
        ["-f", path, "run", "ok_job", "--queue"],
        ["-f", path, "run", "ok_job", "--queue", "--json"],
        ["-f", path, "run", "nope"],
        ["-f", path, "run", "ok_job", "--tag", "runsense/depth=1"],
        ["-f", path, "run", "ok_job", "--tag", "novalue"],
        ["-f", path, "run", "ok_job", "--config-json", "{"],
        ["-f", path, "run", "ok_job", "--config", "/nonexistent/run.json"],
        ["-f", path, "-m", "x.defs", "run", "ok_job"],
        ["-f", other, "run", "ok_job", "-f", path],
        ["-f", path, "runs", "list"],
        ["-f", path, "runs", "list", "--json", "-n", "2"],
        ["-f", path, "runs", "list", "--status", "failed"],
        ["-f", path, "runs", "list", "--status", "SUCESS"],
        ["-f", path, "runs", "list", "--job", "ok_jb"],
        ["-f", path, "runs", "list", "--job", "status_reporting_job"],
        ["--home", "/proc/runsense-nowhere", "runs", "list", "-f", path],
    ]
    for argv in cases:
        fast_run = process(argv, env)
        fast_err, _, modules = fast_run.stderr.rpartition("\nMODULES ")
        assert "typer" not in modules.split(), (argv, modules)
        typer_run = process(argv, env, typer_app=True)
        assert fast_run.returncode == typer_run.returncode, (argv, fast_run, typer_run)
        assert masked(fast_run.stdout) == masked(typer_run.stdout), argv
        assert masked(fast_err) == masked(typer_run.stderr), argv


@pytest.mark.slow
def test_with_verbose_both_end_with_the_same_traceback_and_line(project, env):
    """The frames above the command differ (click's, or the fast path's); what raised and the
    `Error:` line do not."""
    path = str(project(PROJECT))
    argv = ["-f", path, "-v", "run", "nope"]
    fast_err = process(argv, env).stderr.rpartition("\nMODULES ")[0].splitlines()
    typer_err = process(argv, env, typer_app=True).stderr.splitlines()
    assert fast_err[0] == typer_err[0] == "Traceback (most recent call last):"
    assert fast_err[-3:] == typer_err[-3:]
    assert fast_err[-1] == "Error: unknown job 'nope' (`runsense jobs` lists them)"


@pytest.mark.slow
def test_a_plain_piped_run_imports_neither_typer_nor_rich(project, env):
    path = str(project(PROJECT))
    done = process(["-f", path, "run", "ok_job"], env)
    assert done.returncode == 0, done.stderr
    assert done.stderr.rpartition("\nMODULES ")[2].split() == []
    listed = process(["-f", path, "runs", "list", "--json"], env)
    assert listed.returncode == 0, listed.stderr
    assert listed.stderr.rpartition("\nMODULES ")[2].split() == []


@pytest.mark.slow
def test_the_users_objects_are_still_finalized_at_exit(project, env, tmp_path):
    """`runs list` freezes its own objects for the collector (cli/fast.py), never the user's: a
    project object that only the collector can free (it is in a reference cycle) is finalized
    at exit, as without the fast path."""
    marker = tmp_path / "finalized"
    path = str(
        project(
            PROJECT
            + "\nclass Marker:\n"
            + "    def __del__(self, open=open):  # builtins are gone by then\n"
            + f"        open({str(marker)!r}, 'w').write('yes')\n"
            + "marker = Marker()\n"
            + "marker.itself = marker\n"
        )
    )
    # No run of ok_job FAILED, so --job is checked against the project, which is imported.
    done = process(["-f", path, "runs", "list", "--job", "ok_job", "--status", "failure"], env)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "No runs of ok_job with status FAILURE.\n"
    assert marker.read_text() == "yes"
