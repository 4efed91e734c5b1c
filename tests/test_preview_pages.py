"""`runsense sensor preview` for page sensors: Slack threads and digests, and a user's own page
sensor, show what the page would send, as JSON on stdout, and send and store nothing."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from runsense_cli.cli import app
from runsense_cli.storage import open_storage
from tests.slack_server import TOKEN, FakeSlack

PROJECT = f"""
import os
from runsense_cli import (Definitions, RunStatus, SkipReason, job, op,
    make_slack_on_run_failure_sensor, run_status_page_sensor)
@op
def maybe():
    if os.environ.get("FAIL") == "1":
        raise ValueError("warehouse unreachable")
@job
def nightly():
    maybe()
slack = make_slack_on_run_failure_sensor("#alerts", {TOKEN!r}, incidents=True, digest_threshold=3)
@run_status_page_sensor([RunStatus.FAILURE, RunStatus.SUCCESS])
def pager(page):
    for context in page:
        message = {{"ticket": context.dagster_run.job_name, "run": context.dagster_run.run_id}}
        if context.dagster_run.status.value != "FAILURE":
            page.set_result(context, SkipReason("not a failure"))
        elif page.preview:
            page.would_send(message)
        else:
            raise RuntimeError("a preview must not send")
defs = Definitions(jobs=[nightly], sensors=[slack, pager])
"""


@pytest.fixture
def slack(monkeypatch):
    with FakeSlack() as server:
        monkeypatch.setenv("RUNSENSE_SLACK_BASE_URL", server.url)
        yield server


@pytest.fixture
def cli(tmp_path, monkeypatch):
    project = tmp_path / "page_preview_project.py"
    project.write_text(PROJECT)
    runner = CliRunner()

    def invoke(*args: str, fail: bool | None = None):
        if fail is not None:
            monkeypatch.setenv("FAIL", "1" if fail else "0")
        return runner.invoke(app, ["-f", str(project), *args])

    return invoke


def preview(cli, name: str) -> tuple[list, str]:
    result = cli("sensor", "preview", name)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout), result.stderr


def test_a_slack_digest_is_previewed_and_nothing_is_posted_or_stored(slack, cli):
    cli("sensor", "start", "slack_on_run_failure")
    for _ in range(5):
        cli("run", "nightly", fail=True)
    sent, notes = preview(cli, "slack_on_run_failure")
    [digest] = sent
    assert digest["method"] == "chat.postMessage" and digest["channel"] == "#alerts"
    assert digest["text"].startswith("*5 runs failed* across 1 job(s)")
    assert "The page would send 1 message(s) (nothing is sent)" in notes
    assert "warning" not in notes  # the Slack sensor honours page.preview
    assert slack.requests == []
    assert cli("sensor", "tick").exit_code == 0  # nothing stored: the events still wait
    assert len(slack.posts()) == 1


def test_a_slack_thread_reply_and_recovery_are_previewed(slack, cli):
    cli("sensor", "start", "slack_on_run_failure")
    cli("run", "nightly", fail=True)
    cli("sensor", "tick")
    assert len(slack.posts()) == 1
    requests = len(slack.requests)
    cli("run", "nightly", fail=True)
    cli("run", "nightly", fail=False)
    sent, _ = preview(cli, "slack_on_run_failure")
    assert [m["method"] for m in sent] == ["chat.postMessage", "chat.postMessage", "chat.update"]
    again, recovered, edit = sent
    assert "failed again: 2 failures in a row" in again["text"]
    assert recovered["text"].startswith('Resolved: job "nightly" recovered after 2 failure(s)')
    assert again["thread_ts"] == recovered["thread_ts"] == edit["ts"] != "pending"
    assert len(slack.requests) == requests  # nothing posted by the preview


def test_a_users_page_sensor_records_what_it_would_send(cli):
    cli("sensor", "start", "pager")
    failed = [cli("run", "nightly", fail=True) for _ in range(2)]
    cli("run", "nightly", fail=False)
    assert all(r.exit_code == 1 for r in failed)
    sent, notes = preview(cli, "pager")
    run_ids = [r.run_id for r in open_storage().list_runs() if r.status.value == "FAILURE"]
    assert sorted(m["run"] for m in sent) == sorted(run_ids)
    assert {m["ticket"] for m in sent} == {"nightly"}
    assert "page.preview set" in notes  # a user's page sensor gets the warning
    assert "would skip: not a failure" in notes
