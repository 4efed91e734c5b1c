"""Run config validation: `{"ops": {"<op>": {"config": ...}}}` against each op's schema.

Errors name the path that is wrong (`ops.status_report.config.job_name`) so a user can find it in
their config file without reading runsense's code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from .errors import ConfigError
from .values import check_json


class ConfiguredJob(Protocol):
    """What validation needs of a job: its name and its nodes (each `.name`, `.op.name` and
    `.op.config_schema`). A protocol, so this module stays below `jobs` in the import order."""

    name: str

    @property
    def nodes(self) -> Sequence[Any]: ...


ALLOWED_TYPES: tuple[type, ...] = (str, int, float, bool, list, dict)
ConfigSchema = type | Mapping[str, type]


def check_schema(schema: Any, where: str) -> ConfigSchema | None:
    """Refuse a schema runsense cannot validate, at definition time rather than at run time."""
    if schema is None:
        return None
    if isinstance(schema, type):
        if schema not in ALLOWED_TYPES:
            raise _bad_schema_type(schema, where)
        return schema
    if isinstance(schema, Mapping):
        for key, value in schema.items():
            if not isinstance(key, str) or value not in ALLOWED_TYPES:
                raise _bad_schema_type(value, f"{where}.{key}")
        return dict(schema)
    raise _bad_schema_type(schema, where)


def _bad_schema_type(value: Any, where: str) -> ConfigError:
    names = ", ".join(t.__name__ for t in ALLOWED_TYPES)
    return ConfigError(f"config_schema of {where} uses {value!r}", f"use one of {names}")


def validate_run_config(
    job: ConfiguredJob, run_config: Any, where: str = "run config"
) -> dict[str, Any]:
    """Return the run config if it fits the job's ops; raise ConfigError naming the bad path.

    It is stored as JSON, so it must be JSON first (`values.check_json`; `where` names it).
    """
    if run_config is None:
        run_config = {}
    # From here on every mapping is a plain dict: check_json makes one of any Mapping.
    run_config = check_json(run_config, where)
    if type(run_config) is not dict:
        raise ConfigError(
            f"run config must be a mapping, got {type(run_config).__name__}",
            'use the shape {"ops": {"<op name>": {"config": {...}}}}',
        )
    if len(run_config) > 1 or (run_config and "ops" not in run_config):
        unknown_top = sorted(set(run_config) - {"ops"})
        raise ConfigError(f"unknown key '{unknown_top[0]}' in run config", 'only "ops" is allowed')
    ops_config = run_config.get("ops") or {}
    if type(ops_config) is not dict:
        raise ConfigError("ops: expected a mapping of op name to its config")
    nodes = {node.name: node for node in job.nodes}
    for op_name, entry in ops_config.items():
        if op_name not in nodes:
            known = ", ".join(sorted(nodes)) or "none"
            raise ConfigError(
                f"ops.{op_name}: job '{job.name}' has no op named '{op_name}'",
                f"its ops are: {known}",
            )
        if type(entry) is not dict or len(entry) > 1 or (entry and "config" not in entry):
            raise ConfigError(f'ops.{op_name}: expected {{"config": ...}}')
    for name, node in nodes.items():
        schema = node.op.config_schema
        if schema is None:
            continue
        entry = ops_config.get(name)
        if entry is None or "config" not in entry:
            raise ConfigError(
                f"ops.{name}.config is missing: op '{node.op.name}' requires config",
                f"add it with --config-json '{_example(name, schema)}'",
            )
        _check_value(entry["config"], schema, f"ops.{name}.config")
    return dict(run_config)


def _check_value(value: Any, schema: ConfigSchema, path: str) -> None:
    if isinstance(schema, type):
        if not _is_instance(value, schema):
            raise ConfigError(
                f"{path}: expected {schema.__name__}, got {_type_name(value)} {value!r}"
            )
        return
    if type(value) is not dict:
        raise ConfigError(f"{path}: expected a mapping, got {_type_name(value)}")
    for key in value:
        if key not in schema:
            known = ", ".join(sorted(schema)) or "none"
            raise ConfigError(f"{path}.{key}: unknown field", f"known fields: {known}")
    for key, field_type in schema.items():
        if key not in value:
            raise ConfigError(f"{path}.{key}: missing required field ({field_type.__name__})")
        _check_value(value[key], field_type, f"{path}.{key}")


def _is_instance(value: Any, expected: type) -> bool:
    # bool is an int subclass in Python, but `True` for an int field is almost always a mistake.
    if isinstance(value, bool) and expected is not bool:
        return False
    if expected is float:
        return isinstance(value, (int, float))
    return isinstance(value, expected)


def _type_name(value: Any) -> str:
    return {dict: "mapping", list: "list", type(None): "null"}.get(
        type(value), type(value).__name__
    )


def _example(op_name: str, schema: ConfigSchema) -> str:
    import json

    samples = {str: "...", int: 0, float: 0.0, bool: False, list: [], dict: {}}
    if isinstance(schema, type):
        config: Any = samples[schema]
    else:
        config = {key: samples[t] for key, t in schema.items()}
    return json.dumps({"ops": {op_name: {"config": config}}})
