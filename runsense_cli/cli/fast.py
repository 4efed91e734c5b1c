"""`runsense run` and `runsense runs list` with plain arguments, started without Typer.

Importing Typer (and the click it bundles) and building the command tree take ~45 ms: a third of
a one-op `runsense run` (SPEC §8 round 2: ≤ 0.12 s), and the margin `runs list` lacks on
PostgreSQL (≤ 0.2 s, with ~90 ms of it importing psycopg). So `main` reads these two commands'
arguments here when each one is a known option in a plain spelling (`--tag k=v`, `--tag=k=v`,
`-t k=v`), its value, or the one JOB, and calls the very functions the Typer commands call, with
the same values. Anything else returns None and the Typer app takes over, so help, completion,
usage errors and every other command behave exactly as before: `--help` or `-h`, an unknown or
clustered option (`-vt`), a missing value, `--`, an argument starting with `-` where JOB goes, a
second JOB, a `--limit` that is not a plain number in range, a `--config` file that exists but
cannot be read, `_RUNSENSE_COMPLETE` in the environment. tests/test_cli_fast.py checks that both
parsers agree, against the Typer commands' own parameters.
"""

from __future__ import annotations

import errno
import gc
import os
import sys
from dataclasses import dataclass
from typing import Any

from .options import GLOBAL_OPTIONS

FLAG, VALUE, VALUES = "flag", "value", "values"  # VALUES: repeatable, kept in order
MAX_LIMIT = 2**63 - 1  # values.MAX_INT64, the --limit range's top (not imported: it is tiny)
COMPLETE_VAR = "_RUNSENSE_COMPLETE"  # click's shell-completion request for prog "runsense"

# Each command: its words, then {spelling: (parameter, kind)}, named as click names the Typer
# command's parameters (ctx.params), and the name of its one argument, if it takes one.
GLOBALS: dict[str, tuple[str, str]] = {
    decl: (option.param_name, FLAG if option.metavar is None else VALUE)
    for option in GLOBAL_OPTIONS
    for decl in option.decls
}
RUN_OPTIONS: dict[str, tuple[str, str]] = {
    "--config": ("config", VALUE),
    "-c": ("config", VALUE),
    "--config-json": ("config_json", VALUE),
    "--tag": ("tag", VALUES),
    "-t": ("tag", VALUES),
    "--queue": ("queue", FLAG),
    "--json": ("as_json", FLAG),
}
RUNS_LIST_OPTIONS: dict[str, tuple[str, str]] = {
    "--job": ("job", VALUE),
    "--status": ("status", VALUE),
    "--limit": ("limit", VALUE),
    "-n": ("limit", VALUE),
    "--json": ("as_json", FLAG),
}
COMMANDS: dict[tuple[str, ...], tuple[dict[str, tuple[str, str]], str | None]] = {
    ("run",): ({**GLOBALS, **RUN_OPTIONS}, "job_name"),
    ("runs", "list"): ({**GLOBALS, **RUNS_LIST_OPTIONS}, None),
}
# What click gives a parameter that is not on the command line.
DEFAULTS: dict[str, Any] = {
    **{option.param_name: False if option.metavar is None else None for option in GLOBAL_OPTIONS},
    "config": None,
    "config_json": None,
    "tag": None,
    "queue": False,
    "as_json": False,
    "job": None,
    "status": None,
    "limit": 20,
}


@dataclass
class PlainCall:
    """A command line read without Typer, as click would have read it: the root group's
    parameters (the global options given before the command) and the command's own (its
    options, its argument, and the global options given after it)."""

    command: tuple[str, ...]
    root: dict[str, Any]
    params: dict[str, Any]


def _read_options(
    args: list[str], options: dict[str, tuple[str, str]], *, interspersed: bool
) -> tuple[dict[str, Any], list[str]] | None:
    """The options in `args` by parameter, and the other arguments; None where a plain reading
    is not certain. Not `interspersed` (the root group): stop at the first other argument."""
    given: dict[str, Any] = {}
    rest: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("-"):
            if not interspersed:
                return given, args[i:]
            rest.append(arg)
            i += 1
            continue
        i += 1
        name, eq, attached = arg.partition("=")
        if eq and not name.startswith("--"):
            return None  # `-t=x` is `-t` with the value `=x` to click: left to the Typer app
        spec = options.get(name)
        if spec is None:
            return None
        key, kind = spec
        if kind == FLAG:
            if eq:
                return None  # click: "Option '--json' does not take a value."
            given[key] = True
            continue
        if eq:
            value = attached
        elif i < len(args):
            value = args[i]  # click takes the next argument as the value, even `-x`
            i += 1
        else:
            return None  # click: "Option '--tag' requires an argument."
        if kind == VALUES:
            given.setdefault(key, []).append(value)
        else:
            given[key] = value
    return given, rest


def parse(argv: list[str]) -> PlainCall | None:
    """`argv` (without the program name) as a PlainCall, or None: let the Typer app read it."""
    read = _read_options(argv, GLOBALS, interspersed=False)
    if read is None:
        return None
    root, words = read
    command = next((c for c in COMMANDS if tuple(words[: len(c)]) == c), None)
    if command is None:
        return None
    options, argument = COMMANDS[command]
    read = _read_options(words[len(command) :], options, interspersed=True)
    if read is None:
        return None
    given, positional = read
    if len(positional) != (1 if argument else 0):
        return None
    if argument:
        given[argument] = positional[0]
    names = {key for key, _ in options.values()}
    call = PlainCall(
        command,
        {**{key: DEFAULTS[key] for key, _ in GLOBALS.values()}, **root},
        {**{key: DEFAULTS[key] for key in names}, **given},
    )
    return call if _plain_values(call.params) else None


def _plain_values(params: dict[str, Any]) -> bool:
    """The values click would take as they are; others (and their errors) are the Typer app's."""
    limit = params.get("limit")
    if isinstance(limit, str):
        if not (limit.isascii() and limit.isdigit()) or int(limit) > MAX_LIMIT:
            return False
        params["limit"] = int(limit)
    config = params.get("config")
    if config is not None:
        # typer.Option's Path checks `readable` when the file exists (click.Path): its error.
        try:
            os.stat(config)
        except (OSError, ValueError):
            pass
        else:
            if not os.access(config, os.R_OK):
                return False
    return True


def main(argv: list[str]) -> int | None:
    """Run `argv` here and return the exit code, or None when the Typer app should run it."""
    if COMPLETE_VAR in os.environ:
        return None
    call = parse(argv)
    if call is None:
        return None
    return _invoke(call)


def _invoke(call: PlainCall) -> int:
    """What click's standalone main and RunsenseGroup.invoke do around a command, in the same
    order: RunsenseError → one line and its code, then the storage closed; Ctrl-C → 130; EOF →
    `Aborted!`; a closed pipe → 1, quietly."""
    from ..errors import RunsenseError
    from .state import CliState

    state = CliState()
    if call.command == ("runs", "list"):
        gc.disable()  # until _freeze_own_objects: importing psycopg sets off ~60 collections
        state.before_user_code = _freeze_own_objects  # or at the end, if no user code runs
    try:
        try:
            # RunsenseGroup.invoke, then RunsenseCommand.invoke: each level's global options.
            for level in (call.root, call.params):
                state.apply(**{o.field: level.pop(o.param_name) for o in GLOBAL_OPTIONS})
            code = _run(call, state)
        except RunsenseError as exc:
            from .failure import report

            report(state, exc)
            code = exc.exit_code
        finally:
            state.close()
        if state.before_user_code is not None:
            state.before_user_code()
        return code
    except EOFError:
        sys.stderr.write("\nAborted!\n")
        return 1
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        if exc.errno != errno.EPIPE:
            raise
        sys.stdout = _PacifyFlush(sys.stdout)  # type: ignore[assignment]
        sys.stderr = _PacifyFlush(sys.stderr)  # type: ignore[assignment]
        return 1


def _run(call: PlainCall, state: Any) -> int:
    params = call.params
    if call.command == ("run",):
        from pathlib import Path

        from .run_here import run_job

        config = params["config"]
        return run_job(
            state,
            params["job_name"],
            None if config is None else Path(config),
            params["config_json"],
            params["tag"],
            queue=params["queue"],
            as_json=params["as_json"],
        )
    from .runs_list import list_runs

    list_runs(state, params["job"], params["status"], params["limit"], params["as_json"])
    return 0


def _freeze_own_objects() -> None:
    """At exit Python's collector walks every object of the ~300 modules loaded once more: ~20 ms
    of `runs list` on PostgreSQL (psycopg's objects), ~4 ms on SQLite; and while they are
    imported it walks them again and again. `runs list` runs with the collector off, then
    freezes what it made itself before its process exits, or before the user's project is
    imported (only to check --job): the collector skips those, and the OS frees them. The user's
    objects run with the collector on and are not frozen, so they are collected and finalized
    as before (a module-level temporary file still deletes itself at exit)."""
    gc.freeze()
    gc.enable()


class _PacifyFlush:
    """click's PacifyFlushWrapper: after a closed pipe, flushing at exit stays quiet."""

    def __init__(self, wrapped: Any) -> None:
        self.wrapped = wrapped

    def flush(self) -> None:
        try:
            self.wrapped.flush()
        except OSError as exc:
            if exc.errno != errno.EPIPE:
                raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self.wrapped, name)
