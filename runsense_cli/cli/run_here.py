"""`runsense run` and `runs rerun`: creating a run and executing it here, or queueing it.

No Typer here: the fast path (cli/fast.py) runs a plain `runsense run` without importing it.
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Any

from ..errors import ConfigError, RunsenseError
from ..values import MAX_NESTING, RESERVED_TAG_PREFIX, check_json


def run_job(
    state: Any,
    job_name: str,
    config: Path | None,
    config_json: str | None,
    tags: list[str] | None,
    *,
    queue: bool,
    as_json: bool,
) -> int:
    """`runsense run`: check JOB, its config and tags, then run it here (or queue it); the exit
    code."""
    from ..config import validate_run_config

    job = state.definitions.get_job(job_name)
    run_config = validate_run_config(job, _load_run_config(config, config_json))
    return execute_here(
        state, job, run_config, _parse_tags(tags or []), queue=queue, as_json=as_json
    )


def execute_here(
    state: Any,
    job: Any,
    run_config: dict[str, Any],
    tags: dict[str, str],
    *,
    queue: bool,
    as_json: bool,
    launched_by: str = "cli",
    **lineage: Any,
) -> int:
    """Create a run of `job` and run it here (or queue it), printing as `runsense run` does; also
    `runs rerun`. Returns the exit code: the run's outcome."""
    from ..cancel import cancel_on_sigterm
    from ..execution import execute_run, start_run
    from . import render
    from .run_view import RunPrinter

    storage = state.storage
    state.register_sensors()  # first sight of RUNNING-by-default sensors starts them before this run
    record = start_run(
        storage,
        job,
        run_config,
        tags,
        launched_by=launched_by,
        origin=state.project_ref.to_origin(),
        queue=queue,
        **lineage,
    )
    if queue:
        if as_json:
            render.print_json(render.run_json(record))
        else:
            render.console().print(record.run_id, markup=False, soft_wrap=True)
        return 0
    printer = RunPrinter(record, verbose=state.verbose, stderr=as_json)
    printer.begin()
    # With --json, stdout holds only the document: what ops print goes to stderr.
    quiet = contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext()
    try:
        with quiet, cancel_on_sigterm():  # `runs cancel` stops a foreground run the same way
            result = execute_run(storage, job, record, on_step=printer.step)
    except KeyboardInterrupt as exc:
        # execute_run has stored the run CANCELED; say so, and exit as shells expect of Ctrl-C.
        final = storage.get_run(record.run_id)
        printer.canceled(final, "canceled" if hasattr(exc, "reason") else "interrupted")
        if as_json:
            render.print_json(render.run_json(final))
        return 1 if hasattr(exc, "reason") else 130
    printer.end(result)
    if as_json:
        render.print_json(render.run_json(result.run))
    return 0 if result.success else 1


def _load_run_config(path: Path | None, inline: str | None) -> dict[str, Any]:
    config: dict[str, Any] = {}
    if path is not None:
        config = _read_config_file(path)
    if inline is not None:
        try:
            extra = json.loads(inline)
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"--config-json is not valid JSON: {exc}",
                "quote it for the shell: --config-json '{...}'",
            ) from None
        except RecursionError:
            raise _too_deep("--config-json") from None
        if not isinstance(extra, dict):
            raise ConfigError("--config-json must be a JSON object")
        config = _merge(config, check_json(extra, "--config-json"))
    return config


def _too_deep(where: str) -> ConfigError:
    return ConfigError(f"{where}: nested more than {MAX_NESTING} levels deep", "flatten it")


def _read_config_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"cannot read config file {path}: {exc.strerror}", "check the path given to --config"
        ) from None
    suffix = path.suffix.lower()
    try:
        if suffix == ".json":
            data = json.loads(text)
        elif suffix == ".toml":
            data = _toml_loads(text.decode())
        elif suffix in (".yaml", ".yml"):
            data = _yaml_loads(text.decode())
        else:
            raise ConfigError(f"config file {path} must end in .json, .toml or .yaml")
    except ConfigError:
        raise
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text") from None
    except RecursionError:
        raise _too_deep(f"config file {path}") from None
    except Exception as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(
            f"config file {path} is not valid {suffix[1:].upper()}: {detail}", "fix its syntax"
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return check_json(data, f"config file {path}")


def _toml_loads(text: str) -> Any:
    import sys

    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    return tomllib.loads(text)


def _yaml_loads(text: str) -> Any:
    try:
        import yaml  # type: ignore[import-untyped]
    except ImportError:
        raise ConfigError(
            "reading YAML config needs PyYAML", "pip install pyyaml, or use .json / .toml"
        ) from None
    return yaml.safe_load(text)


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _parse_tags(pairs: list[str]) -> dict[str, str]:
    tags = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise RunsenseError(f"--tag '{pair}' is not key=value", "e.g. --tag team=data")
        if key.startswith(RESERVED_TAG_PREFIX):
            # runsense reads them back (runsense/depth guards against sensor loops).
            raise RunsenseError(
                f"--tag '{pair}': tags starting with '{RESERVED_TAG_PREFIX}' are runsense's own",
                "choose another key",
            )
        tags[key] = value
    return tags
