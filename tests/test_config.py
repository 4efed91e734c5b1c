"""Run config validation: the shape `{"ops": {op: {"config": ...}}}` against each op's schema."""

from __future__ import annotations

import pytest

from runsense_cli import job, op
from runsense_cli.config import validate_run_config
from runsense_cli.errors import ConfigError


@op(config_schema={"job_name": str})
def status_report(context):
    return context.op_config["job_name"]


@op(config_schema={"count": int, "ratio": float, "dry_run": bool, "ids": list, "extra": dict})
def tuned(context):
    return context.op_config


@op(config_schema=int)
def scalar(context):
    return context.op_config


@op
def plain():
    return None


@job
def status_reporting_job():
    status_report()


@job
def tuned_job():
    tuned()
    plain()


@job
def scalar_job():
    scalar()
    scalar()


def cfg(op_name: str, config):
    return {"ops": {op_name: {"config": config}}}


GOOD_TUNED = {"count": 3, "ratio": 0.5, "dry_run": True, "ids": [1, 2], "extra": {"a": 1}}


def test_valid_config_is_returned_unchanged():
    """Given config matching every schema, then validation returns it as given."""
    config = cfg("tuned", GOOD_TUNED)
    assert validate_run_config(tuned_job, config) == config
    seed = cfg("status_report", {"job_name": "etl"})
    assert validate_run_config(status_reporting_job, seed) == seed


def test_no_config_is_fine_when_no_op_needs_any():
    """Given a job whose ops have no schema, then None and {} are both valid run config."""

    @job
    def unconfigured():
        plain()

    assert validate_run_config(unconfigured, None) == {}
    assert validate_run_config(unconfigured, {}) == {}


def test_unknown_op_names_the_path_and_lists_the_ops():
    """Given config for an op the job does not have, then the error names it and the real ops."""
    with pytest.raises(ConfigError) as info:
        validate_run_config(status_reporting_job, cfg("status_reprot", {"job_name": "x"}))

    assert info.value.message == (
        "ops.status_reprot: job 'status_reporting_job' has no op named 'status_reprot'"
    )
    assert info.value.hint == "its ops are: status_report"


def test_unknown_field_names_its_path_and_the_known_fields():
    """Given an extra field, then the error names ops.<op>.config.<field> and the known ones."""
    config = cfg("status_report", {"job_name": "etl", "jobname": "etl"})
    with pytest.raises(ConfigError) as info:
        validate_run_config(status_reporting_job, config)

    assert info.value.message == "ops.status_report.config.jobname: unknown field"
    assert info.value.hint == "known fields: job_name"


def test_missing_field_names_its_path_and_type():
    """Given config without a required field, then the error names the field's full path."""
    with pytest.raises(ConfigError) as info:
        validate_run_config(status_reporting_job, cfg("status_report", {}))

    assert info.value.message == ("ops.status_report.config.job_name: missing required field (str)")


def test_missing_op_config_says_how_to_add_it():
    """Given no config at all for an op with a schema, then the error names the path and shows
    an example to copy."""
    with pytest.raises(ConfigError) as info:
        validate_run_config(status_reporting_job, None)

    assert info.value.message.startswith("ops.status_report.config is missing")
    assert '{"ops": {"status_report": {"config": {"job_name": "..."}}}}' in info.value.hint


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("count", True, "ops.tuned.config.count: expected int, got bool True"),
        ("count", "3", "ops.tuned.config.count: expected int, got str '3'"),
        ("count", 3.0, "ops.tuned.config.count: expected int, got float 3.0"),
        ("ratio", "0.5", "ops.tuned.config.ratio: expected float, got str '0.5'"),
        ("ratio", False, "ops.tuned.config.ratio: expected float, got bool False"),
        ("dry_run", 1, "ops.tuned.config.dry_run: expected bool, got int 1"),
        ("ids", {"a": 1}, "ops.tuned.config.ids: expected list, got mapping {'a': 1}"),
        ("extra", None, "ops.tuned.config.extra: expected dict, got null None"),
    ],
)
def test_wrong_types_name_the_path_the_expected_and_the_given_type(field, value, message):
    """Given a value of the wrong type (bool for int included), then the error names the path."""
    with pytest.raises(ConfigError) as info:
        validate_run_config(tuned_job, cfg("tuned", {**GOOD_TUNED, field: value}))

    assert info.value.message == message


def test_int_is_accepted_for_float():
    """Given an int where a float is expected, then the config is valid."""
    config = cfg("tuned", {**GOOD_TUNED, "ratio": 1})
    assert validate_run_config(tuned_job, config) == config


def test_single_type_schema_is_checked_per_aliased_op():
    """Given an op with config_schema=int called twice, then each alias needs its own int."""
    good = {"ops": {"scalar": {"config": 1}, "scalar_2": {"config": 2}}}
    assert validate_run_config(scalar_job, good) == good

    with pytest.raises(ConfigError) as info:
        validate_run_config(scalar_job, {"ops": {"scalar": {"config": 1}}})
    assert info.value.message.startswith("ops.scalar_2.config is missing")

    with pytest.raises(ConfigError) as info:
        validate_run_config(
            scalar_job, {"ops": {"scalar": {"config": 1}, "scalar_2": {"config": "2"}}}
        )
    assert info.value.message == "ops.scalar_2.config: expected int, got str '2'"


def test_config_that_is_not_a_mapping_where_fields_are_expected():
    """Given a scalar where a field mapping is expected, then the error says a mapping is needed."""
    with pytest.raises(ConfigError) as info:
        validate_run_config(status_reporting_job, cfg("status_report", "etl"))

    assert info.value.message == "ops.status_report.config: expected a mapping, got str"


@pytest.mark.parametrize(
    ("run_config", "message"),
    [
        (["ops"], "run config must be a mapping, got list"),
        ({"resources": {}}, "unknown key 'resources' in run config"),
        ({"ops": ["status_report"]}, "ops: expected a mapping of op name to its config"),
        (
            {"ops": {"status_report": {"job_name": "x"}}},
            'ops.status_report: expected {"config": ...}',
        ),
    ],
)
def test_wrong_overall_shape_is_explained(run_config, message):
    """Given run config of the wrong shape, then the error says which level is wrong."""
    with pytest.raises(ConfigError) as info:
        validate_run_config(status_reporting_job, run_config)

    assert info.value.message == message


def test_config_errors_are_user_errors_with_exit_code_2():
    """Given a config error, then it is a RunsenseError the CLI shows as one line with exit 2."""
    with pytest.raises(ConfigError) as info:
        validate_run_config(status_reporting_job, cfg("status_report", {"job_name": 1}))

    assert info.value.exit_code == 2
    assert str(info.value) == "ops.status_report.config.job_name: expected str, got int 1"


def test_str_enum_values_and_keys_are_stored_as_their_text():
    """Given a `(str, Enum)` member as a value or key (JSON encodes it as its value), then the
    validated config holds that text, not the enum's name that `str()` would give."""
    import enum
    import json

    class Color(str, enum.Enum):
        RED = "red"

    config = validate_run_config(
        tuned_job, cfg("tuned", {**GOOD_TUNED, "extra": {Color.RED: Color.RED, "l": [Color.RED]}})
    )
    extra = config["ops"]["tuned"]["config"]["extra"]
    assert extra == {"red": "red", "l": ["red"]}
    assert json.dumps(extra) == '{"red": "red", "l": ["red"]}'
    assert (
        validate_run_config(status_reporting_job, cfg("status_report", {"job_name": Color.RED}))[
            "ops"
        ]["status_report"]["config"]["job_name"]
        == "red"
    )
