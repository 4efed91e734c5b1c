"""Ops, jobs, Definitions and sensor declarations: what user code can and cannot define."""

from __future__ import annotations

import pytest

from runsense_cli import (
    DagsterRunStatus,
    DefaultSensorStatus,
    Definitions,
    RunFailureSensorContext,
    RunRequest,
    RunStatus,
    RunStatusSensorContext,
    RunStatusSensorDefinition,
    SkipReason,
    build_run_status_sensor_context,
    job,
    op,
    run_failure_sensor,
    run_status_sensor,
)
from runsense_cli.errors import ConfigError, DefinitionError, RunsenseError
from runsense_cli.runs import EventType, RunRecord
from runsense_cli.storage import open_storage


@op
def extract():
    return [1, 2, 3]


@op
def double(rows):
    return [r * 2 for r in rows]


@op
def total(left, right):
    return sum(left) + sum(right)


@op
def shout(context):
    context.log.info("shouting")
    return "!"


@op
def explode():
    raise ValueError("kaput")


@job
def diamond():
    rows = extract()
    total(double(rows), double(rows))


@job(name="renamed", description="A job with its own name.", tags={"team": "data", "n": 3})
def declared_with_options():
    shout()


@job
def noisy():
    shout()


@job
def failing():
    explode()


# -- ops and jobs -------------------------------------------------------------------------------


def test_passing_outputs_makes_dependencies_in_topological_order():
    """Given a diamond-shaped job, when it is defined, then every op comes after its inputs."""
    names = [node.name for node in diamond.nodes]
    inputs = {node.name: node.inputs for node in diamond.nodes}

    assert names == ["extract", "double", "double_2", "total"]
    assert inputs == {
        "extract": {},
        "double": {"rows": "extract"},
        "double_2": {"rows": "extract"},
        "total": {"left": "double", "right": "double_2"},
    }
    for node in diamond.nodes:
        for upstream in node.inputs.values():
            assert names.index(upstream) < names.index(node.name)


def test_an_op_called_twice_gets_an_alias_and_both_run():
    """Given an op called twice in a job, when the job runs, then both invocations produce output."""
    result = diamond.execute_in_process()

    assert result.success
    assert result.output_for_node("double") == [2, 4, 6]
    assert result.output_for_node("double_2") == [2, 4, 6]
    assert result.output_for_node("total") == 24


def test_an_op_called_outside_a_job_runs_the_function():
    """Given an op, when called directly outside a job body, then it just returns its value."""
    assert double([5]) == [10]
    assert total([1], [2]) == 3


def test_job_options_name_description_and_tags():
    """Given @job(name=..., description=..., tags=...), then the job carries them (tags as str)."""
    assert declared_with_options.name == "renamed"
    assert declared_with_options.description == "A job with its own name."
    assert declared_with_options.tags == {"team": "data", "n": "3"}


def test_op_options_name_and_description_default_to_function_and_docstring():
    """Given @op(name=...) and a docstring, then the op is named and described by them."""

    @op(name="load_rows")
    def load():
        """Load the rows."""

    assert load.name == "load_rows"
    assert load.description == "Load the rows."


def test_unconnected_input_is_an_error_naming_the_input_and_op():
    """Given a job body that calls an op without its input, then defining it fails clearly."""
    with pytest.raises(DefinitionError, match="input 'rows' of op 'double' is not connected"):

        @job
        def broken():
            double()


def test_a_constant_passed_as_input_is_an_error():
    """Given a job body passing a literal to an op input, then defining it says to use config."""
    with pytest.raises(DefinitionError, match="must be another op's output, got list") as info:

        @job
        def broken():
            double([1, 2])

    assert "op config" in str(info.value)


def test_too_many_inputs_and_unknown_keyword_are_errors():
    """Given wrong call shapes in a job body, then each is a DefinitionError naming the op."""
    with pytest.raises(DefinitionError, match="op 'double' takes 1 input"):

        @job
        def too_many():
            rows = extract()
            double(rows, rows)

    with pytest.raises(DefinitionError, match="op 'double' got input 'nope'"):

        @job
        def unknown_kw():
            double(nope=extract())


def test_a_job_without_ops_is_an_error():
    """Given an empty job body, then defining it fails saying it has no ops."""
    with pytest.raises(DefinitionError, match="job 'empty' has no ops"):

        @job
        def empty():
            pass


def test_op_config_schema_with_unsupported_type_is_refused_at_definition():
    """Given a config_schema using a type runsense cannot validate, then @op fails at once."""
    with pytest.raises(ConfigError, match=r"config_schema of op 'odd'\.when uses"):

        @op(config_schema={"when": complex})
        def odd():
            pass


# -- Definitions --------------------------------------------------------------------------------


def test_duplicate_job_names_are_refused():
    """Given two different jobs with the same name, then Definitions refuses them."""

    @job(name="diamond")
    def other():
        extract()

    with pytest.raises(DefinitionError, match="two jobs are named 'diamond'"):
        Definitions(jobs=[diamond, other])


def test_duplicate_sensor_names_are_refused():
    """Given two sensors with the same name, then Definitions refuses them."""

    @run_failure_sensor(name="alert")
    def first(context):
        pass

    @run_status_sensor(RunStatus.SUCCESS, name="alert")
    def second(context):
        pass

    with pytest.raises(DefinitionError, match="two sensors are named 'alert'"):
        Definitions(sensors=[first, second])


def test_request_job_is_added_to_the_jobs_once():
    """Given sensors whose request_job is not listed, then Definitions adds it (once)."""

    @run_status_sensor(RunStatus.SUCCESS, request_job=noisy)
    def one(context):
        pass

    @run_status_sensor(RunStatus.FAILURE, request_jobs=[noisy, failing])
    def two(context):
        pass

    defs = Definitions(jobs=[diamond], sensors=[one, two])

    assert list(defs.jobs) == ["diamond", "noisy", "failing"]
    assert defs.get_job("noisy") is noisy


def test_a_request_job_clashing_with_another_job_of_that_name_is_refused():
    """Given a listed job and a different request_job with the same name, then it is an error."""

    @job(name="noisy")
    def impostor():
        extract()

    @run_status_sensor(RunStatus.SUCCESS, request_job=impostor)
    def s(context):
        pass

    with pytest.raises(DefinitionError, match="two jobs are named 'noisy'"):
        Definitions(jobs=[noisy], sensors=[s])


def test_non_jobs_and_non_sensors_are_refused():
    """Given something that is not a job or not a sensor, then Definitions says what it got."""
    with pytest.raises(DefinitionError, match="not a @job"):
        Definitions(jobs=[extract])
    with pytest.raises(DefinitionError, match="not a run status sensor"):
        Definitions(sensors=[diamond])


def test_unknown_names_suggest_close_matches():
    """Given a misspelt job or sensor name, then the error suggests the right one."""

    @run_failure_sensor
    def on_failure(context):
        pass

    defs = Definitions(jobs=[diamond], sensors=[on_failure])

    with pytest.raises(RunsenseError, match="unknown job 'diamon'") as info:
        defs.get_job("diamon")
    assert "did you mean 'diamond'" in str(info.value)
    with pytest.raises(RunsenseError, match="unknown sensor 'on_failur'") as info:
        defs.get_sensor("on_failur")
    assert "did you mean 'on_failure'" in str(info.value)


def test_location_is_the_defining_module_and_set_location_renames_jobs():
    """Given Definitions made in this module, then its location is the module; set_location moves
    it and its jobs."""

    @job
    def local_job():
        extract()

    defs = Definitions(jobs=[local_job])
    assert defs.location == __name__
    assert local_job.location == __name__

    defs.set_location("elsewhere")
    assert defs.location == "elsewhere"
    assert local_job.location == "elsewhere"


# -- sensor declarations ------------------------------------------------------------------------


def test_monitored_jobs_and_monitor_all_code_locations_together_are_refused():
    """Given both monitored_jobs and monitor_all_code_locations, then the decorator fails."""
    with pytest.raises(DefinitionError, match="give monitored_jobs or monitor_all_code_locations"):

        @run_status_sensor(
            RunStatus.SUCCESS, monitored_jobs=[diamond], monitor_all_code_locations=True
        )
        def both(context):
            pass

    with pytest.raises(DefinitionError, match="not both"):

        @run_failure_sensor(monitored_jobs=["x"], monitor_all_code_locations=True)
        def both_failure(context):
            pass


def test_not_started_and_unknown_statuses_are_refused():
    """Given run_status NOT_STARTED or a made-up status, then the decorator fails clearly."""
    with pytest.raises(DefinitionError, match="NOT_STARTED is never reached"):

        @run_status_sensor(RunStatus.NOT_STARTED)
        def never(context):
            pass

    with pytest.raises(DefinitionError, match="unknown run_status 'DONE'"):

        @run_status_sensor("DONE")
        def made_up(context):
            pass


def test_other_bad_sensor_arguments_are_refused():
    """Given request_job with request_jobs, a non-job target, a bad monitored job or negative
    retries, then each is a DefinitionError."""

    def fn(context):
        pass

    with pytest.raises(DefinitionError, match="request_job or request_jobs, not both"):
        run_status_sensor(RunStatus.SUCCESS, request_job=noisy, request_jobs=[failing])(fn)
    with pytest.raises(DefinitionError, match="is not a @job"):
        run_status_sensor(RunStatus.SUCCESS, request_job=extract)(fn)
    with pytest.raises(DefinitionError, match="monitored_jobs holds 42"):
        run_status_sensor(RunStatus.SUCCESS, monitored_jobs=[42])(fn)
    with pytest.raises(DefinitionError, match="must be >= 0"):
        run_status_sensor(RunStatus.SUCCESS, max_retries=-1)(fn)


def test_run_status_sensor_keeps_its_settings():
    """Given a fully specified run_status_sensor, then the definition exposes those settings."""

    @run_status_sensor(
        run_status=DagsterRunStatus.SUCCESS,
        name="reporter",
        minimum_interval_seconds=30,
        description="Reports.",
        monitored_jobs=[diamond, "other_loc:their_job"],
        default_status=DefaultSensorStatus.RUNNING,
        request_job=noisy,
        max_retries=2,
        retry_delay_seconds=0.5,
    )
    def fn(context):
        pass

    assert isinstance(fn, RunStatusSensorDefinition)
    assert (fn.name, fn.run_status, fn.description) == ("reporter", RunStatus.SUCCESS, "Reports.")
    assert fn.minimum_interval_seconds == 30
    assert fn.default_status == DefaultSensorStatus.RUNNING
    assert fn.request_jobs == [noisy]
    assert (fn.max_retries, fn.retry_delay_seconds) == (2, 0.5)
    assert fn.event_type == EventType.RUN_SUCCESS
    assert fn.monitored_names() == ["diamond", "other_loc:their_job"]


def test_run_failure_sensor_bare_and_called():
    """Given @run_failure_sensor bare and called with options, then both watch FAILURE."""

    @run_failure_sensor
    def bare(context):
        pass

    @run_failure_sensor(name="called", monitored_jobs=[failing], max_retries=1)
    def with_options(context):
        pass

    assert (bare.name, bare.run_status, bare.max_retries) == ("bare", RunStatus.FAILURE, 5)
    assert bare.default_status == DefaultSensorStatus.STOPPED
    assert (with_options.name, with_options.run_status) == ("called", RunStatus.FAILURE)
    assert with_options.monitored_jobs == [failing]
    assert with_options.max_retries == 1
    assert bare.event_type == EventType.RUN_FAILURE


def test_statuses_equal_their_names_and_the_dagster_alias_is_the_same_enum():
    """Given RunStatus, then each value is its name and DagsterRunStatus is the same type."""
    assert DagsterRunStatus is RunStatus
    assert [s.value for s in RunStatus] == [s.name for s in RunStatus]
    assert {s.value for s in RunStatus} == {
        "QUEUED",
        "NOT_STARTED",
        "STARTING",
        "STARTED",
        "SUCCESS",
        "FAILURE",
        "CANCELING",
        "CANCELED",
    }


# -- unit-testing a sensor ----------------------------------------------------------------------


def test_seed_sensor_called_with_a_built_context_returns_its_request():
    """Given the seed's report_status_sensor and a built context, when called, then it returns a
    RunRequest for another job's run and a SkipReason for its own job's run."""

    @op(config_schema={"job_name": str})
    def status_report(context):
        pass

    @job
    def status_reporting_job():
        status_report()

    @run_status_sensor(run_status=DagsterRunStatus.SUCCESS, request_job=status_reporting_job)
    def report_status_sensor(context):
        if context.dagster_run.job_name != status_reporting_job.name:
            run_config = {
                "ops": {"status_report": {"config": {"job_name": context.dagster_run.job_name}}}
            }
            return RunRequest(run_key=None, run_config=run_config)
        return SkipReason("Don't report status of status_reporting_job")

    other = RunRecord("r1", "diamond", RunStatus.SUCCESS, "loc", tags={"partition": "2024-01"})
    own = RunRecord("r2", "status_reporting_job", RunStatus.SUCCESS, "loc")

    context = build_run_status_sensor_context("report_status_sensor", other)
    assert isinstance(context, RunStatusSensorContext)
    assert not isinstance(context, RunFailureSensorContext)
    assert context.sensor_name == "report_status_sensor"
    assert context.run is context.dagster_run
    assert context.partition_key == "2024-01"
    assert report_status_sensor(context) == RunRequest(
        run_config={"ops": {"status_report": {"config": {"job_name": "diamond"}}}}
    )
    assert report_status_sensor(
        build_run_status_sensor_context("report_status_sensor", own)
    ) == SkipReason("Don't report status of status_reporting_job")


def test_calling_a_generator_sensor_returns_the_list_of_requests():
    """Given a sensor that yields RunRequests, when called with a context, then a list comes back."""

    @run_status_sensor(RunStatus.SUCCESS, request_job=noisy)
    def fan_out(context):
        for n in range(3):
            yield RunRequest(run_key=f"{context.dagster_run.run_id}-{n}")

    run = RunRecord("abc", "diamond", RunStatus.SUCCESS, "loc")
    result = fan_out(build_run_status_sensor_context("fan_out", run))

    assert result == [RunRequest(run_key=f"abc-{n}") for n in range(3)]


def test_a_failure_context_built_from_a_real_failed_run_lists_its_step_failures(home):
    """Given a real failed run, when a failure sensor is called with a built context, then it sees
    the failure event's message and each failed op with its traceback."""
    seen = {}

    @run_failure_sensor
    def inspect_failure(context):
        seen["failure"] = context.failure_event.message
        seen["steps"] = context.get_step_failure_events()
        seen["partition"] = context.partition_key

    result = failing.execute_in_process()
    with open_storage() as storage:
        run = storage.get_run(result.run_id)
        event = storage.status_event_for_run(run.run_id, EventType.RUN_FAILURE)
        context = build_run_status_sensor_context("inspect_failure", run, event, storage)
        assert isinstance(context, RunFailureSensorContext)
        assert inspect_failure(context) is None

    assert 'Step "explode" failed: ValueError: kaput' in seen["failure"]
    [step] = seen["steps"]
    assert step.step_key == "explode"
    assert step.error.cls_name == "ValueError" and step.error.message == "kaput"
    assert "in explode" in step.error.stack and "raise ValueError" in step.error.stack
    assert seen["partition"] is None


def test_the_same_job_listed_twice_is_accepted():
    @op
    def once():
        return 1

    @job
    def twice_listed():
        once()

    assert list(Definitions(jobs=[twice_listed, twice_listed]).jobs) == ["twice_listed"]
