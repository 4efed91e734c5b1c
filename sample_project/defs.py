"""The seed page's jobs and sensors, with only the import line changed from Dagster's."""

import os
import time

from runsense_cli import (
    DagsterRunStatus,
    DefaultSensorStatus,
    Definitions,
    EnvVar,
    RunFailureSensorContext,
    RunRequest,
    SkipReason,
    job,
    make_email_on_run_failure_sensor,
    make_slack_on_run_failure_sensor,
    op,
    run_failure_sensor,
    run_overdue_sensor,
    run_status_sensor,
)


@op
def extract() -> list[int]:
    """Pretend to read a few rows."""
    return [3, 1, 2]


@op
def transform(rows: list[int]) -> list[int]:
    return sorted(rows)


@op
def load(context, rows: list[int]) -> int:
    context.log.info(f"loaded {len(rows)} rows")
    return len(rows)


@job(description="Extract, transform and load a few rows: the sample's main job.")
def etl_job():
    load(transform(extract()))


@op
def hello(context) -> str:
    context.log.info("hello from runsense")
    return "hello"


@job(description="A one-op job that succeeds.")
def hello_job():
    hello()


@op
def flaky_op() -> None:
    raise ValueError("the upstream API returned 503")


@job(description="Fails on purpose, to show failure sensors.")
def failing_job():
    flaky_op()


@op(config_schema={"job_name": str})
def status_report(context) -> None:
    context.log.info(f"Job {context.op_config['job_name']} succeeded.")


@job
def status_reporting_job():
    status_report()


@run_status_sensor(
    run_status=DagsterRunStatus.SUCCESS,
    request_job=status_reporting_job,
    default_status=DefaultSensorStatus.RUNNING,
)
def report_status_sensor(context):
    # this condition prevents the sensor from triggering status_reporting_job again after it succeeds
    if context.dagster_run.job_name != status_reporting_job.name:
        run_config = {
            "ops": {"status_report": {"config": {"job_name": context.dagster_run.job_name}}}
        }
        return RunRequest(run_key=None, run_config=run_config)
    else:
        return SkipReason("Don't report status of status_reporting_job")


@run_failure_sensor(default_status=DefaultSensorStatus.RUNNING)
def log_failures(context: RunFailureSensorContext):
    """Log every failed run with the op that failed; returning None records a reaction event."""
    for step in context.get_step_failure_events():
        context.log.warning(
            "run %s: op %s failed: %s", context.dagster_run.run_id, step.step_key, step.error
        )


# Posts every failed run to Slack. It starts RUNNING only when a token is set at its first load;
# otherwise: export SLACK_BOT_TOKEN=xoxb-... and `runsense sensor start slack_on_run_failure`.
slack_on_run_failure = make_slack_on_run_failure_sensor(
    channel=os.environ.get("RUNSENSE_SLACK_CHANNEL", "#alerts"),
    slack_token=EnvVar("SLACK_BOT_TOKEN"),
    default_status=DefaultSensorStatus.RUNNING
    if os.environ.get("SLACK_BOT_TOKEN")
    else DefaultSensorStatus.STOPPED,
)

# Alerts people can live with (README "Alerting"). All start STOPPED; `runsense sensor preview
# NAME` shows what they would send without sending it.
# One thread per incident and one digest for more than 10 failures in a tick.
slack_incidents = make_slack_on_run_failure_sensor(
    channel=os.environ.get("RUNSENSE_SLACK_CHANNEL", "#alerts"),
    slack_token=EnvVar("SLACK_BOT_TOKEN"),
    name="slack_incidents",
    incidents=True,
    digest_threshold=10,
)

# Emails every failed run: export SMTP_PASSWORD=... and `runsense sensor start email_on_run_failure`.
email_on_run_failure = make_email_on_run_failure_sensor(
    email_from=os.environ.get("RUNSENSE_EMAIL_FROM", "runsense@example.com"),
    email_password=EnvVar("SMTP_PASSWORD"),
    email_to=[os.environ.get("RUNSENSE_EMAIL_TO", "oncall@example.com")],
    smtp_host=os.environ.get("RUNSENSE_SMTP_HOST", "smtp.gmail.com"),
)


@op
def slow_step(context) -> None:
    context.log.info("taking longer than the job's runsense/max_runtime of 1s")
    time.sleep(3)


@job(
    tags={"runsense/max_runtime": "1"},
    description="Runs 3s against a 1s max_runtime: the daemon marks it overdue.",
)
def slow_job():
    slow_step()


@run_overdue_sensor()
def log_overdue(context):
    """Log runs past their runsense/max_runtime (the run keeps going)."""
    context.log.warning(
        f"{context.dagster_run.job_name} {context.phase} for {context.overdue_seconds:.0f}s"
    )


defs = Definitions(
    jobs=[etl_job, hello_job, failing_job, slow_job],
    sensors=[
        report_status_sensor,
        log_failures,
        slack_on_run_failure,
        slack_incidents,
        email_on_run_failure,
        log_overdue,
    ],
)
