"""Issue 11, Slack without noise: threads per incident, recovery edits, digests, retries."""

from __future__ import annotations

import pytest

from runsense_cli import Definitions, make_slack_on_run_failure_sensor, op
from runsense_cli.evaluation import SensorEvaluator
from runsense_cli.jobs import job
from runsense_cli.records import ReactionState, SensorStatus
from runsense_cli.storage import open_storage
from tests.slack_server import TOKEN, FakeSlack


@op(config_schema={"fail": bool})
def maybe(context):
    if context.op_config["fail"]:
        raise ValueError("warehouse unreachable")


@job
def nightly():
    maybe()


@job
def hourly():
    maybe()


@job(tags={"runsense/max_retries": "1"})
def retried():
    maybe()


def outcome(job_def, fail: bool):
    return job_def.execute_in_process(run_config={"ops": {"maybe": {"config": {"fail": fail}}}})


@pytest.fixture
def slack(monkeypatch):
    with FakeSlack() as server:
        monkeypatch.setenv("RUNSENSE_SLACK_BASE_URL", server.url)
        yield server


def started(sensor, jobs=(nightly, hourly, retried)) -> SensorEvaluator:
    evaluator = SensorEvaluator(open_storage(), Definitions(jobs=list(jobs), sensors=[sensor]))
    evaluator.register_sensors()
    evaluator.storage.set_sensor_status(evaluator.state(sensor).sensor_id, SensorStatus.RUNNING)
    return evaluator


def test_three_failures_then_a_success_make_one_message_two_replies_a_recovery_and_an_edit(slack):
    sensor = make_slack_on_run_failure_sensor("#alerts", TOKEN, incidents=True)
    evaluator = started(sensor)
    outcome(nightly, True)
    evaluator.tick(sensor)
    # A restart between failures: a new evaluator and storage still find the thread.
    evaluator = started(sensor)
    for _ in range(2):
        outcome(nightly, True)
        evaluator.tick(sensor)
    outcome(nightly, False)
    evaluator.tick(sensor)
    [first] = slack.top_level()
    assert first["blocks"][0]["text"]["text"].startswith('*Job "nightly" failed.')
    ts = slack.ts_of(0)
    replies = slack.replies(ts)
    assert len(replies) == 3
    assert "failed again: 2 failures in a row" in replies[0]["text"]
    assert "failed again: 3 failures in a row" in replies[1]["text"]
    assert replies[2]["text"].startswith('Resolved: job "nightly" recovered after 3 failure(s) in')
    [edit] = slack.updates()
    assert edit["ts"] == ts and "recovered after 3 failure(s)" in edit["text"]
    # Next outage: a new message, a new thread.
    outcome(nightly, True)
    evaluator.tick(sensor)
    assert len(slack.top_level()) == 2
    states = [r.state for r in evaluator.storage.reactions_for(evaluator.state(sensor).sensor_id)]
    assert states == [ReactionState.SUCCESS] * 5


def test_a_success_without_an_incident_posts_nothing(slack):
    sensor = make_slack_on_run_failure_sensor("#alerts", TOKEN, incidents=True)
    evaluator = started(sensor)
    outcome(nightly, False)
    evaluator.tick(sensor)
    assert slack.posts() == []
    [reaction] = evaluator.storage.reactions_for(evaluator.state(sensor).sensor_id)
    assert reaction.state == ReactionState.SKIPPED


def test_thirty_failures_in_one_tick_make_one_digest_naming_all_thirty(slack):
    sensor = make_slack_on_run_failure_sensor("#alerts", TOKEN, digest_threshold=10)
    evaluator = started(sensor)
    run_ids = [outcome(nightly if i % 3 else hourly, True).run_id for i in range(30)]
    evaluator.tick(sensor)
    [digest] = slack.posts()
    assert digest["text"].startswith("*30 runs failed* across 2 job(s)")
    for run_id in run_ids:
        assert run_id.split("-")[0] in digest["text"]
    assert "warehouse unreachable" in digest["text"]
    reactions = evaluator.storage.reactions_for(evaluator.state(sensor).sensor_id)
    assert len(reactions) == 30 and {r.state for r in reactions} == {ReactionState.SUCCESS}
    # Under the threshold: one message each.
    for _ in range(3):
        outcome(nightly, True)
    evaluator.tick(sensor)
    assert len(slack.posts()) == 4


def test_a_digest_of_more_than_twenty_jobs_says_how_many_more(slack):
    from runsense_cli.slack_threads import digest_message

    class Ctx:
        def __init__(self, n):
            from runsense_cli.runs import EventType, RunEvent, RunRecord, RunStatus

            self.dagster_run = RunRecord(f"{n:08d}-x", f"job{n}", RunStatus.FAILURE, "loc")
            self.dagster_event = RunEvent(n, "r", EventType.RUN_FAILURE, 0.0, "boom")

    message = digest_message("#a", [Ctx(n) for n in range(25)])
    lines = message["blocks"][1]["text"]["text"].splitlines()
    assert len(lines) == 21 and lines[-1] == "+5 more"


def test_a_retried_run_alerts_only_for_its_final_failure(slack):
    from runsense_cli.execution import execute_run

    sensor = make_slack_on_run_failure_sensor("#alerts", TOKEN)
    evaluator = started(sensor)
    outcome(retried, True)
    for run, _token in evaluator.storage.claim_queued_runs("t/1/1", 10):
        execute_run(evaluator.storage, retried, run)
    evaluator.tick(sensor)
    [post] = slack.posts()
    final = evaluator.storage.list_runs("retried")[0]
    assert final.tags["runsense/retry_number"] == "1"
    assert final.run_id.split("-")[0] in post["blocks"][0]["text"]["text"]
    states = [r.state for r in evaluator.storage.reactions_for(evaluator.state(sensor).sensor_id)]
    assert states == [ReactionState.SKIPPED, ReactionState.SUCCESS]
    # include_retries=True posts both.
    both = make_slack_on_run_failure_sensor("#all", TOKEN, include_retries=True, name="all")
    evaluator = started(both)
    outcome(retried, True)
    for run, _token in evaluator.storage.claim_queued_runs("t/1/1", 10):
        execute_run(evaluator.storage, retried, run)
    evaluator.tick(both)
    assert len([p for p in slack.posts() if p["channel"] == "#all"]) == 2


def test_one_outage_of_1000_failures_across_5_jobs(slack):
    """The number for the report: default vs incidents + digest, all in one tick."""
    jobs = []
    for n in range(5):
        jobs.append(job(name=f"job{n}")(lambda: maybe()))
    quiet = make_slack_on_run_failure_sensor(
        "#quiet", TOKEN, incidents=True, digest_threshold=10, name="quiet"
    )
    evaluator = started(quiet, jobs=jobs)
    for i in range(1000):
        outcome(jobs[i % 5], True)
    evaluator.tick(quiet)
    assert len(slack.posts()) == 1
