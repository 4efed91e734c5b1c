"""Definitions, config validation, execution and storage, through the library API."""

from __future__ import annotations

import os
import sqlite3
import stat

import pytest

from runsense_cli import (
    DagsterRunStatus,
    Definitions,
    RunStatus,
    build_run_status_sensor_context,
    job,
    op,
    run_failure_sensor,
    run_status_sensor,
)
from runsense_cli.errors import ConfigError, DefinitionError, StorageError
from runsense_cli.storage import open_storage
from runsense_cli.storage.schema import SCHEMA_VERSION


@op
def one():
    return 1


@op
def add_one(x):
    return x + 1


@op(config_schema={"job_name": str, "count": int, "ratio": float})
def configured(context):
    context.log.info("hello %s", context.op_config["job_name"])
    return context.op_config["count"]


@job
def chain():
    add_one(add_one(one()))


@job
def with_config():
    configured()


@op
def explode():
    raise ValueError("kaput")


@job
def failing():
    one()
    explode()
    add_one(one())


def test_outputs_flow_along_dependencies_and_repeated_ops_get_aliases():
    """Given a chain using add_one twice, when run, then outputs flow and nodes are aliased."""
    result = chain.execute_in_process()
    assert result.success
    assert [node.name for node in chain.nodes] == ["one", "add_one", "add_one_2"]
    assert result.output_for_node("add_one_2") == 3


def test_an_op_called_outside_a_job_just_runs():
    assert add_one(41) == 42


def test_unconnected_input_is_a_definition_error():
    with pytest.raises(DefinitionError, match="input 'x' of op 'add_one' is not connected"):

        @job
        def broken():
            add_one()


def test_duplicate_names_and_sensor_targets():
    """A sensor's request_job joins the jobs; two jobs with one name are refused."""

    @run_status_sensor(run_status=RunStatus.SUCCESS, request_job=with_config)
    def s(context):
        return None

    defs = Definitions(jobs=[chain], sensors=[s])
    assert set(defs.jobs) == {"chain", "with_config"}
    impostor = job(name="chain")(lambda: one())
    with pytest.raises(DefinitionError, match="two jobs are named 'chain'"):
        Definitions(jobs=[chain, impostor])
    with pytest.raises(DefinitionError, match="two sensors"):
        Definitions(sensors=[s, s])


def test_sensor_definition_errors():
    with pytest.raises(DefinitionError, match="not both"):
        run_status_sensor(
            RunStatus.SUCCESS, monitored_jobs=[chain], monitor_all_code_locations=True
        )(lambda c: None)
    with pytest.raises(DefinitionError, match="NOT_STARTED"):
        run_status_sensor(RunStatus.NOT_STARTED)(lambda c: None)


def test_failure_sensor_bare_and_called_and_unit_testable():
    @run_failure_sensor
    def bare(context):
        return context.failure_event

    @run_failure_sensor(name="named")
    def called(context):
        return "seen " + context.dagster_run.job_name

    assert bare.run_status == called.run_status == DagsterRunStatus.FAILURE
    assert called.name == "named"
    result = failing.execute_in_process()
    run = open_storage().get_run(result.run_id)
    context = build_run_status_sensor_context("named", run)
    assert called(context) == "seen failing"


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({}, "ops.configured.config is missing"),
        ({"ops": {"nope": {"config": {}}}}, "ops.nope: job 'with_config' has no op named 'nope'"),
        (
            {"ops": {"configured": {"config": {"job_name": "a", "count": 1, "ratio": 1, "x": 1}}}},
            "ops.configured.config.x: unknown field",
        ),
        (
            {"ops": {"configured": {"config": {"job_name": "a", "count": 1}}}},
            "ops.configured.config.ratio: missing required field",
        ),
        (
            {"ops": {"configured": {"config": {"job_name": 3, "count": 1, "ratio": 1.0}}}},
            "ops.configured.config.job_name: expected str, got int",
        ),
        (
            {"ops": {"configured": {"config": {"job_name": "a", "count": True, "ratio": 1.0}}}},
            "ops.configured.config.count: expected int, got bool",
        ),
    ],
)
def test_bad_run_config_names_the_path_and_stores_nothing(home, config, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        with_config.execute_in_process(run_config=config)
    assert not (home / "runsense.db").exists()


def test_config_reaches_the_op_and_logs_go_to_the_event_log():
    config = {"ops": {"configured": {"config": {"job_name": "x", "count": 2, "ratio": 1}}}}
    result = with_config.execute_in_process(run_config=config, tags={"team": "data"})
    assert result.output_for_node("configured") == 2
    storage = open_storage()
    run = storage.get_run(result.run_id)
    assert run.tags["team"] == "data"
    events = storage.events_for_run(result.run_id)
    assert [e.event_type.value for e in events] == [
        "RUN_STARTING",
        "RUN_START",
        "STEP_START",
        "LOG",
        "STEP_SUCCESS",
        "RUN_SUCCESS",
    ]
    log = events[3]
    assert (log.message, log.step_key, log.level) == ("hello x", "configured", "INFO")


def test_a_failing_op_fails_the_run_and_stops_later_ops():
    result = failing.execute_in_process()
    assert not result.success
    assert result.failed_step == "explode"
    storage = open_storage()
    events = storage.events_for_run(result.run_id)
    failure = next(e for e in events if e.event_type.value == "STEP_FAILURE")
    assert failure.error is not None and "ValueError: kaput" in failure.error.stack
    assert events[-1].event_type.value == "RUN_FAILURE"
    assert 'Step "explode" failed: ValueError: kaput' in events[-1].message
    assert not any(e.step_key == "add_one" for e in events)
    assert storage.get_run(result.run_id).status == RunStatus.FAILURE


def test_home_and_database_permissions_and_pragmas(home):
    chain.execute_in_process()
    assert stat.S_IMODE(os.stat(home).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(home / "runsense.db").st_mode) == 0o600
    connection = sqlite3.connect(home / "runsense.db")
    assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_a_file_that_is_not_sqlite_is_refused_untouched(home):
    home.mkdir()
    (home / "runsense.db").write_bytes(b"definitely not a database" * 10)
    with pytest.raises(StorageError, match="is not a SQLite database"):
        open_storage()
    assert (home / "runsense.db").read_bytes() == b"definitely not a database" * 10


def test_a_newer_database_is_refused(home):
    open_storage().close()
    connection = sqlite3.connect(home / "runsense.db")
    connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    connection.close()
    with pytest.raises(StorageError, match="newer than this runsense"):
        open_storage()


def test_find_run_by_prefix_and_list_newest_first():
    first = chain.execute_in_process()
    second = failing.execute_in_process()
    storage = open_storage()
    assert storage.find_run(first.run_id[:10]).run_id == first.run_id
    assert [r.run_id for r in storage.list_runs()] == [second.run_id, first.run_id]
    assert [r.run_id for r in storage.list_runs(status=RunStatus.FAILURE)] == [second.run_id]
    assert [r.run_id for r in storage.list_runs(job_name="chain")] == [first.run_id]
    with pytest.raises(Exception, match="no run id starts with"):
        storage.find_run("zzzz")


def test_the_same_job_listed_twice_is_accepted_and_prefixes_ignore_case():
    assert list(Definitions(jobs=[chain, chain]).jobs) == ["chain"]
    result = chain.execute_in_process()
    assert open_storage().find_run(result.run_id[:8].upper()).run_id == result.run_id
