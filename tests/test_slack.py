"""Slack alerts with the real slack_sdk client against a local server speaking Slack's Web API."""

from __future__ import annotations

import os

import pytest
from slack_sdk import WebClient
from typer.testing import CliRunner

from runsense_cli import Definitions, EnvVar, RunStatus, job, make_slack_on_run_failure_sensor, op
from runsense_cli.cli import app
from runsense_cli.evaluation import SensorEvaluator
from runsense_cli.records import ReactionState, SensorStatus
from runsense_cli.storage import Storage
from tests.slack_server import TOKEN, FakeSlack


@op
def flaky():
    raise ValueError("warehouse unreachable")


@job
def nightly():
    flaky()


@pytest.fixture
def slack(monkeypatch):
    with FakeSlack() as server:
        monkeypatch.setenv("RUNSENSE_SLACK_BASE_URL", server.url)
        yield server


def started(defs: Definitions, sensor, clock=None) -> SensorEvaluator:
    kwargs = {"clock": clock} if clock else {}
    evaluator = SensorEvaluator(Storage.open(), defs, **kwargs)
    evaluator.register_sensors()
    evaluator.storage.set_sensor_status(
        evaluator.state(sensor).sensor_id,
        SensorStatus.RUNNING,
        cursor=evaluator.storage.newest_event_id(),
    )
    return evaluator


def reactions(evaluator, sensor):
    return evaluator.storage.reactions_for(evaluator.state(sensor).sensor_id)


def test_the_message_has_the_header_the_error_and_no_button_by_default(slack):
    sensor = make_slack_on_run_failure_sensor("#alerts", TOKEN)
    assert sensor.name == "slack_on_run_failure" and sensor.run_status == RunStatus.FAILURE
    evaluator = started(Definitions(jobs=[nightly], sensors=[sensor]), sensor)
    run_id = nightly.execute_in_process().run_id
    evaluator.tick(sensor)
    [post] = slack.posts()
    failure = 'Execution of run for "nightly" failed. Step "flaky" failed: ValueError: warehouse unreachable'
    assert post["channel"] == "#alerts"
    assert post["text"] == f"Error: ```{failure}```"
    assert post["blocks"] == [
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": f'*Job "nightly" failed. `{run_id.split("-")[0]}`*'},
        },
        {"type": "section", "text": {"type": "mrkdwn", "text": f"Error: ```{failure}```"}},
    ]
    assert [r.state for r in reactions(evaluator, sensor)] == [ReactionState.SUCCESS]


def test_text_fn_blocks_fn_and_the_view_run_button(slack):
    custom = make_slack_on_run_failure_sensor(
        "#a",
        TOKEN,
        name="custom",
        text_fn=lambda c: f"{c.dagster_run.job_name} broke",
        webserver_base_url="http://runs.local/",
    )
    blocky = make_slack_on_run_failure_sensor(
        "#b",
        TOKEN,
        name="blocky",
        blocks_fn=lambda c: [
            {"type": "section", "text": {"type": "mrkdwn", "text": "custom block"}}
        ],
    )
    defs = Definitions(jobs=[nightly], sensors=[custom, blocky])
    evaluator = started(defs, custom)
    evaluator.storage.set_sensor_status(evaluator.state(blocky).sensor_id, SensorStatus.RUNNING)
    run_id = nightly.execute_in_process().run_id
    evaluator.tick(custom)
    evaluator.tick(blocky)
    first, second = slack.posts()
    assert first["text"] == "nightly broke"
    assert first["blocks"][1]["text"]["text"] == "nightly broke"
    assert first["blocks"][2]["elements"][0]["url"] == f"http://runs.local/runs/{run_id}"
    assert second["blocks"] == [
        {"type": "section", "text": {"type": "mrkdwn", "text": "custom block"}}
    ]


def test_long_sections_are_cut_to_3000_characters_with_a_marker(slack):
    sensor = make_slack_on_run_failure_sensor("#a", TOKEN, text_fn=lambda c: "x" * 5000)
    evaluator = started(Definitions(jobs=[nightly], sensors=[sensor]), sensor)
    nightly.execute_in_process()
    evaluator.tick(sensor)
    [post] = slack.posts()
    section = post["blocks"][1]["text"]["text"]
    assert len(section) == 3000 and section.endswith("… (truncated)")


def test_a_rate_limit_is_retried_inside_one_attempt_and_posts_once(slack):
    slack.script.extend(["429"])
    sensor = make_slack_on_run_failure_sensor("#a", TOKEN)
    evaluator = started(Definitions(jobs=[nightly], sensors=[sensor]), sensor)
    nightly.execute_in_process()
    evaluator.tick(sensor)
    assert len(slack.posts()) == 1
    assert [r["answer"] for r in slack.requests] == ["429", "ok"]
    assert [r.attempts for r in reactions(evaluator, sensor)] == [1]


def test_server_errors_and_stalls_until_recovery_deliver_every_alert_once(slack):
    """Given Slack failing for a while (500s, a stall), every alert arrives once after recovery."""
    now = [1000.0]
    sensor = make_slack_on_run_failure_sensor("#a", TOKEN, name="s", retry_delay_seconds=1)
    sensor.timeout, sensor.retries = 1, 1
    slack.stall_seconds = 2.0
    slack.script.extend(["500", "500", "stall", "stall", "500", "500"])
    evaluator = started(Definitions(jobs=[nightly], sensors=[sensor]), sensor, clock=lambda: now[0])
    runs = [nightly.execute_in_process().run_id for _ in range(3)]
    for _ in range(8):
        evaluator.tick(sensor)
        now[0] += 100
    assert {r.state for r in reactions(evaluator, sensor)} == {ReactionState.SUCCESS}
    delivered = [p["blocks"][0]["text"]["text"] for p in slack.posts()]
    assert sorted(delivered) == sorted(f'*Job "nightly" failed. `{r.split("-")[0]}`*' for r in runs)


def test_invalid_auth_parks_the_reaction_at_once_with_the_code(slack):
    sensor = make_slack_on_run_failure_sensor("#a", "xoxb-wrong-token")
    evaluator = started(Definitions(jobs=[nightly], sensors=[sensor]), sensor)
    nightly.execute_in_process()
    evaluator.tick(sensor)
    [reaction] = reactions(evaluator, sensor)
    assert reaction.state == ReactionState.DEAD and reaction.attempts == 1
    assert "invalid_auth" in reaction.error and "xoxb-wrong-token" not in reaction.error


def test_a_missing_token_variable_is_a_failed_reaction_naming_it(slack, monkeypatch):
    monkeypatch.delenv("SLACK_BOT_TOKEN", raising=False)
    sensor = make_slack_on_run_failure_sensor(
        "#a", EnvVar("SLACK_BOT_TOKEN"), retry_delay_seconds=0
    )
    evaluator = started(Definitions(jobs=[nightly], sensors=[sensor]), sensor)
    nightly.execute_in_process()
    evaluator.tick(sensor)
    [reaction] = reactions(evaluator, sensor)
    assert reaction.state == ReactionState.RETRYING
    assert "set the environment variable SLACK_BOT_TOKEN" in reaction.error
    monkeypatch.setenv("SLACK_BOT_TOKEN", TOKEN)
    evaluator.tick(sensor)
    assert [r.state for r in reactions(evaluator, sensor)] == [ReactionState.SUCCESS]
    assert len(slack.posts()) == 1


def test_the_token_is_never_stored_or_printed(slack, home, tmp_path, monkeypatch, capsys):
    project = tmp_path / "slack_project.py"
    project.write_text(
        "from runsense_cli import Definitions, EnvVar, job, op, make_slack_on_run_failure_sensor\n"
        "@op\ndef boom():\n    raise ValueError('x')\n"
        "@job\ndef boom_job():\n    boom()\n"
        "alert = make_slack_on_run_failure_sensor('#a', EnvVar('SLACK_BOT_TOKEN'))\n"
        "wrong = make_slack_on_run_failure_sensor('#a', 'xoxb-' + 'inline-wrong-secret', name='wrong')\n"
        "defs = Definitions(jobs=[boom_job], sensors=[alert, wrong])\n"
    )
    monkeypatch.setenv("SLACK_BOT_TOKEN", TOKEN)
    runner = CliRunner()
    outputs = []
    for args in (
        ["sensor", "start", "--all"],
        ["run", "boom_job"],
        ["sensor", "tick"],
        ["sensor", "failures", "--json"],
        ["sensor", "ticks", "wrong", "--json"],
        ["-v", "sensor", "list"],
    ):
        result = runner.invoke(app, ["-f", str(project), *args])
        outputs.append(result.output + (result.stderr or ""))
    assert len(slack.posts()) == 1
    assert any("invalid_auth" in out for out in outputs)
    captured = capsys.readouterr()
    everything = "".join(outputs) + captured.out + captured.err
    storage_bytes = b"".join(p.read_bytes() for p in home.iterdir() if p.is_file())
    for secret in (TOKEN, "xoxb-inline-wrong-secret"):
        assert secret not in everything
        assert secret.encode() not in storage_bytes


def test_preview_prints_the_message_and_sends_nothing(slack, tmp_path):
    project = tmp_path / "preview_project.py"
    project.write_text(
        "from runsense_cli import Definitions, job, op, make_slack_on_run_failure_sensor\n"
        "@op\ndef flaky():\n    raise ValueError('warehouse unreachable')\n"
        "@job\ndef nightly():\n    flaky()\n"
        f"alert = make_slack_on_run_failure_sensor('#alerts', {TOKEN!r})\n"
        "defs = Definitions(jobs=[nightly], sensors=[alert])\n"
    )
    runner = CliRunner()
    assert runner.invoke(app, ["-f", str(project), "run", "nightly"]).exit_code == 1
    run_id = Storage.open().list_runs()[0].run_id
    result = runner.invoke(
        app, ["-f", str(project), "sensor", "preview", "slack_on_run_failure", "--run", run_id[:8]]
    )
    assert result.exit_code == 0, result.output
    assert "would post to Slack (nothing is sent)" in result.stdout
    assert '"channel": "#alerts"' in result.stdout and "warehouse unreachable" in result.stdout
    assert TOKEN not in result.output
    assert slack.requests == []


def test_the_seed_snippet_posts_once_per_successful_run(monkeypatch):
    """The seed's own sensor builds its WebClient itself; only the import line is changed."""
    with FakeSlack() as server:
        original = WebClient.__init__

        def redirected(self, *args, **kwargs):
            kwargs.setdefault("base_url", server.url)
            original(self, *args, **kwargs)

        monkeypatch.setattr(WebClient, "__init__", redirected)
        monkeypatch.setenv("SLACK_DAGSTER_ETL_BOT_TOKEN", TOKEN)
        namespace: dict = {"WebClient": WebClient, "os": os}
        exec(SEED_SNIPPET, namespace)
        sensor = namespace["my_slack_on_run_success"]

        @op
        def fine():
            return 1

        @job
        def my_sensor_job():
            fine()

        evaluator = started(Definitions(jobs=[my_sensor_job], sensors=[sensor]), sensor)
        my_sensor_job.execute_in_process()
        my_sensor_job.execute_in_process()
        evaluator.tick(sensor)
        evaluator.tick(sensor)
        posts = server.posts()
    assert [p["text"] for p in posts] == ['Job "my_sensor_job" succeeded.'] * 2
    assert {p["channel"] for p in posts} == {"#alert-channel"}


SEED_SNIPPET = """
from runsense_cli import run_status_sensor, RunStatusSensorContext, DagsterRunStatus


@run_status_sensor(run_status=DagsterRunStatus.SUCCESS)
def my_slack_on_run_success(context: RunStatusSensorContext):
    slack_client = WebClient(token=os.environ["SLACK_DAGSTER_ETL_BOT_TOKEN"])

    slack_client.chat_postMessage(
        channel="#alert-channel",
        text=f'Job "{context.dagster_run.job_name}" succeeded.',
    )
"""
