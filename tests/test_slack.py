"""Slack alerts with the real slack_sdk client, over real HTTP, against a local Slack Web API."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time

import pytest
from slack_sdk import WebClient
from typer.testing import CliRunner

from runsense_cli import Definitions, EnvVar, RunStatus, job, make_slack_on_run_failure_sensor, op
from runsense_cli.cli import app
from runsense_cli.errors import DefinitionError
from runsense_cli.evaluation import SensorEvaluator
from runsense_cli.records import ReactionState, SensorStatus, TickStatus
from runsense_cli.storage import open_storage
from tests.processes import RUNSENSE
from tests.slack_server import RATE_LIMITED, SERVER_ERROR, STALL, TOKEN, FakeSlack

FAILURE = (
    'Execution of run for "nightly" failed. Step "flaky" failed: ValueError: warehouse unreachable'
)
# A 1 s timeout leaves room for a loaded CI machine (`pytest -n auto`) and still keeps stalls short.
FAST = {"timeout_seconds": 1.0, "http_retries": 1, "http_backoff_seconds": 0.01}


@op
def flaky():
    raise ValueError("warehouse unreachable")


@job
def nightly():
    flaky()


@op
def verbose_failure():
    raise ValueError("x" * 5000)


@job
def long_failure():
    verbose_failure()


@pytest.fixture
def slack(monkeypatch):
    with FakeSlack() as server:
        monkeypatch.setenv("RUNSENSE_SLACK_BASE_URL", server.url)
        yield server


class Clock:
    """The evaluator's clock, moved by hand so retries fall due without sleeping."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def started(*sensors, jobs=(nightly,), clock=None) -> SensorEvaluator:
    """An evaluator whose sensors are RUNNING from now on, as after `runsense sensor start`."""
    kwargs = {"clock": clock} if clock else {}
    evaluator = SensorEvaluator(
        open_storage(), Definitions(jobs=list(jobs), sensors=list(sensors)), **kwargs
    )
    evaluator.register_sensors()
    for sensor in sensors:
        evaluator.storage.set_sensor_status(evaluator.state(sensor).sensor_id, SensorStatus.RUNNING)
    return evaluator


def reactions(evaluator, sensor):
    return evaluator.storage.reactions_for(evaluator.state(sensor).sensor_id)


def header(run_id: str, job_name: str = "nightly") -> dict:
    return {
        "type": "section",
        "text": {"type": "mrkdwn", "text": f'*Job "{job_name}" failed. `{run_id.split("-")[0]}`*'},
    }


def test_the_message_is_the_header_and_the_error_without_a_button(slack):
    sensor = make_slack_on_run_failure_sensor("#alerts", TOKEN)
    assert (sensor.name, sensor.run_status) == ("slack_on_run_failure", RunStatus.FAILURE)
    evaluator = started(sensor)
    run_id = nightly.execute_in_process().run_id
    evaluator.tick(sensor)
    assert slack.posts() == [
        {
            "channel": "#alerts",
            "text": f"Error: ```{FAILURE}```",
            "blocks": [
                header(run_id),
                {"type": "section", "text": {"type": "mrkdwn", "text": f"Error: ```{FAILURE}```"}},
            ],
        }
    ]
    assert [r.state for r in reactions(evaluator, sensor)] == [ReactionState.SUCCESS]


def test_text_fn_fills_the_second_section_and_the_text_and_a_base_url_adds_the_button(slack):
    sensor = make_slack_on_run_failure_sensor(
        "#a",
        TOKEN,
        text_fn=lambda c: f"{c.dagster_run.job_name} broke",
        webserver_base_url="http://runs.local/",
    )
    evaluator = started(sensor)
    run_id = nightly.execute_in_process().run_id
    evaluator.tick(sensor)
    [post] = slack.posts()
    assert post["text"] == "nightly broke"
    assert post["blocks"] == [
        header(run_id),
        {"type": "section", "text": {"type": "mrkdwn", "text": "nightly broke"}},
        {
            "type": "actions",
            "elements": [
                {
                    "type": "button",
                    "text": {"type": "plain_text", "text": "View run"},
                    "url": f"http://runs.local/runs/{run_id}",
                }
            ],
        },
    ]


def test_blocks_fn_replaces_the_first_two_blocks_and_keeps_the_button(slack):
    custom = {"type": "section", "text": {"type": "mrkdwn", "text": "custom block"}}
    sensor = make_slack_on_run_failure_sensor(
        "#b", TOKEN, blocks_fn=lambda c: [custom], webserver_base_url="http://runs.local"
    )
    evaluator = started(sensor)
    run_id = nightly.execute_in_process().run_id
    evaluator.tick(sensor)
    [post] = slack.posts()
    assert post["text"] == f"Error: ```{FAILURE}```"  # the notification text is still text_fn's
    assert post["blocks"][0] == custom
    assert post["blocks"][1]["elements"][0]["url"] == f"http://runs.local/runs/{run_id}"
    assert len(post["blocks"]) == 2


def test_sections_are_cut_to_3000_characters_with_a_visible_marker(slack):
    default = make_slack_on_run_failure_sensor("#a", TOKEN, name="default")
    texty = make_slack_on_run_failure_sensor(
        "#b", TOKEN, name="texty", text_fn=lambda c: "y" * 5000
    )
    blocky = make_slack_on_run_failure_sensor(
        "#c",
        TOKEN,
        name="blocky",
        blocks_fn=lambda c: [{"type": "section", "text": {"type": "mrkdwn", "text": "z" * 5000}}],
    )
    evaluator = started(default, texty, blocky, jobs=[long_failure])
    long_failure.execute_in_process()
    for sensor in (default, texty, blocky):
        evaluator.tick(sensor)
    by_channel = {post["channel"]: post for post in slack.posts()}
    error_section = by_channel["#a"]["blocks"][1]["text"]["text"]
    assert len(error_section) == 3000
    assert error_section.startswith("Error: ```") and error_section.endswith("xx… (truncated)```")
    assert by_channel["#b"]["blocks"][1]["text"]["text"] == "y" * 2987 + "… (truncated)"
    assert by_channel["#b"]["text"] == "y" * 5000  # the top-level text allows 40,000
    assert by_channel["#c"]["blocks"][0]["text"]["text"] == "z" * 2987 + "… (truncated)"


def test_a_rate_limit_waits_for_retry_after_and_posts_once(slack):
    slack.script(RATE_LIMITED)
    sensor = make_slack_on_run_failure_sensor("#a", TOKEN)
    evaluator = started(sensor)
    nightly.execute_in_process()
    evaluator.tick(sensor)
    assert slack.answers() == [RATE_LIMITED, "ok"]
    assert slack.requests[1].at - slack.requests[0].at >= slack.retry_after
    assert len(slack.posts()) == 1
    assert [(r.state, r.attempts) for r in reactions(evaluator, sensor)] == [
        (ReactionState.SUCCESS, 1)
    ]


def test_server_errors_for_a_while_then_every_alert_arrives_once(slack):
    clock = Clock()
    sensor = make_slack_on_run_failure_sensor("#a", TOKEN, retry_delay_seconds=10, **FAST)
    evaluator = started(sensor, clock=clock)
    runs = [nightly.execute_in_process().run_id for _ in range(3)]
    slack.script(SERVER_ERROR, times=5)  # 2 tries per post: the first two posts fail, the third
    evaluator.tick(sensor)  # gets through on its retry
    assert [r.state for r in reactions(evaluator, sensor)] == [ReactionState.RETRYING] * 2 + [
        ReactionState.SUCCESS
    ]
    assert "Slack answered HTTP 500 internal_error" in reactions(evaluator, sensor)[0].error

    evaluator.tick(sensor)  # not due yet: nothing is sent again
    assert len(slack.requests) == 6
    clock.now += 10
    evaluator.tick(sensor)

    assert [(r.state, r.attempts) for r in reactions(evaluator, sensor)] == [
        (ReactionState.SUCCESS, 2)
    ] * 2 + [(ReactionState.SUCCESS, 1)]
    assert sorted(p["blocks"][0]["text"]["text"] for p in slack.posts()) == sorted(
        header(r)["text"]["text"] for r in runs
    )
    ticks = evaluator.storage.list_ticks(evaluator.state(sensor).sensor_id)
    assert [t.status for t in reversed(ticks)] == [
        TickStatus.FAILURE,
        TickStatus.SKIPPED,
        TickStatus.SUCCESS,
    ]


def test_a_stall_past_the_timeout_is_retried_later_and_posts_once(slack):
    clock = Clock()
    sensor = make_slack_on_run_failure_sensor("#a", TOKEN, retry_delay_seconds=5, **FAST)
    evaluator = started(sensor, clock=clock)
    nightly.execute_in_process()
    slack.stall_seconds = 3.0
    slack.script(STALL, times=2)
    evaluator.tick(sensor)
    [reaction] = reactions(evaluator, sensor)
    assert reaction.state == ReactionState.RETRYING
    assert "could not reach Slack after 2 tries" in reaction.error and "timed out" in reaction.error
    clock.now += 5
    evaluator.tick(sensor)
    assert slack.answers() == [STALL, STALL, "ok"]
    assert len(slack.posts()) == 1
    assert [(r.state, r.attempts) for r in reactions(evaluator, sensor)] == [
        (ReactionState.SUCCESS, 2)
    ]


@pytest.mark.parametrize(
    ("code", "state"),
    [
        ("channel_not_found", ReactionState.DEAD),
        ("not_in_channel", ReactionState.DEAD),
        ("msg_too_long", ReactionState.DEAD),
        ("account_inactive", ReactionState.DEAD),
        ("fatal_error", ReactionState.RETRYING),  # Slack's own trouble: try again later
    ],
)
def test_slack_error_codes_park_the_reaction_only_when_no_retry_can_help(slack, code, state):
    slack.script(code)
    sensor = make_slack_on_run_failure_sensor("#a", TOKEN)
    evaluator = started(sensor)
    nightly.execute_in_process()
    evaluator.tick(sensor)
    [reaction] = reactions(evaluator, sensor)
    assert (reaction.state, reaction.attempts) == (state, 1)
    assert code in reaction.error
    assert slack.posts() == []


def test_invalid_auth_parks_the_reaction_at_once_with_the_code_but_not_the_token(slack):
    sensor = make_slack_on_run_failure_sensor("#a", "xoxb-wrong-token")
    evaluator = started(sensor)
    nightly.execute_in_process()
    evaluator.tick(sensor)
    [reaction] = reactions(evaluator, sensor)
    assert (reaction.state, reaction.attempts, reaction.next_attempt_at) == (
        ReactionState.DEAD,
        1,
        None,
    )
    assert reaction.error == "PermanentReactionError: Slack refused the message to #a: invalid_auth"
    assert slack.answers() == ["invalid_auth"]


def test_a_missing_token_variable_fails_the_reaction_naming_it_until_it_is_set(slack, monkeypatch):
    monkeypatch.delenv("SLACK_BOT_TOKEN", raising=False)
    sensor = make_slack_on_run_failure_sensor(
        "#a", EnvVar("SLACK_BOT_TOKEN"), retry_delay_seconds=0
    )
    evaluator = started(sensor)
    nightly.execute_in_process()
    evaluator.tick(sensor)
    [reaction] = reactions(evaluator, sensor)
    assert reaction.state == ReactionState.RETRYING
    assert "set the environment variable SLACK_BOT_TOKEN" in reaction.error
    assert slack.requests == []
    monkeypatch.setenv("SLACK_BOT_TOKEN", TOKEN)
    evaluator.tick(sensor)
    assert [r.state for r in reactions(evaluator, sensor)] == [ReactionState.SUCCESS]
    assert len(slack.posts()) == 1


def test_a_token_that_is_neither_a_string_nor_an_env_var_is_refused_at_definition():
    with pytest.raises(DefinitionError, match="slack_token must be a string or EnvVar"):
        make_slack_on_run_failure_sensor("#a", None)  # type: ignore[arg-type]
    with pytest.raises(DefinitionError, match="slack_token must be a string or EnvVar"):
        make_slack_on_run_failure_sensor("#a", "")
    assert repr(EnvVar("SLACK_BOT_TOKEN")) == "EnvVar('SLACK_BOT_TOKEN')"
    assert TOKEN not in repr(make_slack_on_run_failure_sensor("#a", TOKEN))


TOKEN_PROJECT = """
import logging, os
from runsense_cli import Definitions, EnvVar, job, op, make_slack_on_run_failure_sensor
if os.environ.get("TOKEN_TEST_DEBUG_LOG"):
    logging.basicConfig(level=logging.DEBUG)  # slack_sdk's debug log, request headers and all
FAST = dict(timeout_seconds=1.0, http_retries=1, http_backoff_seconds=0.01)
@op
def boom():
    raise ValueError("x")
@job
def boom_job():
    boom()
alert = make_slack_on_run_failure_sensor("#ok", EnvVar("SLACK_BOT_TOKEN"), **FAST)
flaky = make_slack_on_run_failure_sensor("#flaky", EnvVar("SLACK_BOT_TOKEN"), name="flaky", **FAST)
wrong = make_slack_on_run_failure_sensor("#ok", "xoxb-inline-wrong-secret", name="wrong", **FAST)
broken = make_slack_on_run_failure_sensor("#ok", "xoxb-inline-broken-secret", name="broken", text_fn=lambda c: 1 / 0)
defs = Definitions(jobs=[boom_job], sensors=[alert, flaky, wrong, broken])
"""


def test_the_token_is_never_stored_logged_or_printed(
    slack, home, tmp_path, monkeypatch, capsys, caplog
):
    """Posts that succeed, fail on 500s, fail on invalid_auth and fail in text_fn leave no token."""
    caplog.set_level(logging.DEBUG)
    project = tmp_path / "slack_token_project.py"
    project.write_text(TOKEN_PROJECT)
    monkeypatch.setenv("SLACK_BOT_TOKEN", TOKEN)
    slack.script(SERVER_ERROR, times=2, channel="#flaky")
    runner = CliRunner()
    outputs = []
    for args in (
        ["sensor", "start", "--all"],
        ["run", "boom_job"],
        ["-v", "sensor", "tick"],  # in a process of its own, below
        ["sensor", "failures", "--json"],
        *(
            ["sensor", "ticks", name, "--json"]
            for name in ("slack_on_run_failure", "flaky", "wrong", "broken")
        ),
        ["-v", "sensor", "list"],
        ["runs", "list", "--json"],
    ):
        if args[-1] == "tick":
            # The tick runs in a forked process: a real command shows what it logs.
            ticked = subprocess.run(
                [*RUNSENSE, "-f", str(project), *args],
                env={**os.environ, "TOKEN_TEST_DEBUG_LOG": "1"},
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert "Sending a request" in ticked.stderr  # slack_sdk's debug log was on
            outputs.append(ticked.stdout + ticked.stderr)
            continue
        result = runner.invoke(app, ["-f", str(project), *args])
        outputs.append(result.output + (result.stderr or ""))
    run_id = open_storage().list_runs()[0].run_id
    shown = runner.invoke(app, ["-f", str(project), "runs", "show", run_id, "--json"])
    assert "acted on run status FAILURE" in shown.output  # the post's write-back event
    outputs.append(shown.output)
    failures = outputs[3]
    assert (
        "invalid_auth" in failures
        and "internal_error" in failures
        and "ZeroDivisionError" in failures
    )
    assert "<redacted>" in failures  # the text_fn's traceback line spelled the token out
    assert len(slack.posts()) == 1

    everything = "".join(outputs) + "".join(capsys.readouterr()) + caplog.text
    stored = b"".join(path.read_bytes() for path in home.iterdir() if path.is_file())
    assert (home / "runsense.db-wal").exists() or (home / "runsense.db").exists()
    for secret in (TOKEN, "xoxb-inline-wrong-secret", "xoxb-inline-broken-secret"):
        assert secret not in everything
        assert secret.encode() not in stored


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
    run_id = open_storage().list_runs()[0].run_id
    result = runner.invoke(
        app, ["-f", str(project), "sensor", "preview", "slack_on_run_failure", "--run", run_id[:8]]
    )
    assert result.exit_code == 0, result.output
    assert "would post this to Slack (nothing is sent)" in result.stderr
    message = json.loads(result.stdout)  # the message alone on stdout
    assert message["channel"] == "#alerts" and "warehouse unreachable" in result.stdout
    assert TOKEN not in result.output
    assert slack.requests == []


def test_defining_a_slack_sensor_does_not_import_slack_sdk():
    code = (
        "import sys\n"
        "from runsense_cli import EnvVar, make_slack_on_run_failure_sensor\n"
        "make_slack_on_run_failure_sensor('#a', EnvVar('T'))\n"
        "assert 'slack_sdk' not in sys.modules, 'slack_sdk imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


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


@op
def fine():
    return 1


@job
def my_sensor_job():
    fine()


def test_the_seed_snippet_posts_once_per_successful_run(monkeypatch):
    """The seed's sensor builds its own WebClient (only the import line changed), so Slack's
    default base URL is redirected: `base_url`'s default was bound when slack_sdk was imported,
    so patching `WebClient.BASE_URL` would not reach it."""
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
        evaluator = started(sensor, jobs=[my_sensor_job])
        my_sensor_job.execute_in_process()
        my_sensor_job.execute_in_process()
        evaluator.tick(sensor)
        evaluator.tick(sensor)
    assert [(p["channel"], p["text"]) for p in server.posts()] == [
        ("#alert-channel", 'Job "my_sensor_job" succeeded.')
    ] * 2
    assert [r.state for r in reactions(evaluator, sensor)] == [ReactionState.SUCCESS] * 2
