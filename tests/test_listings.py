"""Listings that stay fast on a big history (issue 9), on both backends: a sensor far behind shows
its waiting events counted up to a cap, `runs list` filters by job and status together, and
`runsense run` prints the same lines whether or not rich is on the path."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from runsense_cli.cli import app
from runsense_cli.runs import RunStatus
from runsense_cli.storage import LAG_CAP, open_storage
from tests.helpers import PROJECT

runner = CliRunner()


@pytest.fixture
def proj(project):
    return project(PROJECT)


def rs(proj, url: str, *args: str, code: int = 0):
    result = runner.invoke(app, ["-f", str(proj), "--database-url", url, *args])
    assert result.exit_code == code, result.output
    return result.stdout


def sensors(proj, url: str) -> dict[str, dict]:
    return {s["name"]: s for s in json.loads(rs(proj, url, "sensor", "list", "--json"))}


def failures(url: str, location: str, count: int) -> None:
    """`count` failed runs of bad_job, in one transaction (each with its RUN_FAILURE event)."""
    storage = open_storage(url=url)
    try:
        with storage.transaction():
            for _ in range(count):
                storage.create_run("bad_job", location, status=RunStatus.FAILURE)
    finally:
        storage.close()


def row_of(table: str, name: str) -> list[str]:
    [line] = [line for line in table.splitlines() if f" {name} " in line]
    return [cell.strip() for cell in line.strip("│┃ ").split("│")]


def test_a_sensor_far_behind_shows_at_least_the_cap(backend, proj):
    """Given more than LAG_CAP failures waiting, then sensor list, sensor cursor and status show
    `≥ 10,000` and --json says `lag_capped`; once the cursor is near the head, the exact count."""
    rs(proj, backend, "sensor", "start", "on_failure")
    location = sensors(proj, backend)["on_failure"]["location"]
    failures(backend, location, LAG_CAP + 5)

    listed = sensors(proj, backend)["on_failure"]
    assert (listed["lag"], listed["lag_capped"]) == (LAG_CAP, True)
    assert row_of(rs(proj, backend, "sensor", "list"), "on_failure")[4] == "≥ 10,000"
    assert "≥ 10,000 FAILURE event(s) waiting" in rs(
        proj, backend, "sensor", "cursor", "on_failure"
    )
    [health] = [
        s
        # exit 1: a sensor runs and no daemon is alive
        for s in json.loads(rs(proj, backend, "status", "--json", code=1))["sensors"]
        if s["name"] == "on_failure"
    ]
    assert (health["lag"], health["lag_capped"]) == (LAG_CAP, True)

    newest = json.loads(rs(proj, backend, "sensor", "cursor", "on_failure", "--json"))
    rs(proj, backend, "sensor", "cursor", "on_failure", "--set", str(newest["newest_event_id"] - 3))
    listed = sensors(proj, backend)["on_failure"]
    assert (listed["lag"], listed["lag_capped"]) == (3, False)
    assert row_of(rs(proj, backend, "sensor", "list"), "on_failure")[4] == "3"


def test_a_stopped_sensor_restarted_far_behind_says_at_least_the_cap(backend, proj):
    rs(proj, backend, "sensor", "start", "on_failure")
    rs(proj, backend, "sensor", "stop", "on_failure")
    failures(backend, sensors(proj, backend)["on_failure"]["location"], LAG_CAP + 1)
    started = rs(proj, backend, "sensor", "start", "on_failure")
    assert "≥ 10,000 FAILURE event(s) waiting will be handled on its next tick" in started


def test_runs_list_filters_job_and_status_together_newest_first(backend, proj):
    """Given runs of two jobs in every outcome, then each --job/--status pair lists exactly its
    runs, newest first, and a pair with no runs says so."""
    rs(proj, backend, "sensor", "list")  # the database, and the project's location
    location = sensors(proj, backend)["on_failure"]["location"]
    storage = open_storage(url=backend)
    made: dict[tuple[str, str], list[str]] = {}
    try:
        for i in range(12):
            job = ("ok_job", "bad_job")[i % 2]
            status = (RunStatus.SUCCESS, RunStatus.FAILURE, RunStatus.CANCELED)[i % 3]
            run = storage.create_run(job, location, status=status, now=1_000_000.0 + i // 4)
            made.setdefault((job, status.value), []).append(run.run_id)
    finally:
        storage.close()
    for (job, status), run_ids in made.items():
        listed = json.loads(
            rs(proj, backend, "runs", "list", "--job", job, "--status", status, "--json")
        )
        # Newest first; runs created in the same instant, the later one first.
        assert [r["run_id"] for r in listed] == run_ids[::-1]
        assert {(r["job_name"], r["status"]) for r in listed} == {(job, status)}
    out = rs(proj, backend, "runs", "list", "--job", "ok_job", "--status", "queued")
    assert out.strip() == "No runs of ok_job with status QUEUED."


def test_jobs_seen_in_the_database_are_listed_once_each_in_order(backend):
    storage = open_storage(url=backend)
    try:
        for job in ["b_job", "a_job", "c_job", "a_job", "b_job"]:
            storage.create_run(job, "loc", status=RunStatus.SUCCESS)
        assert storage.job_names() == ["a_job", "b_job", "c_job"]
    finally:
        storage.close()


LOGGING = """
from runsense_cli import Definitions, job, op

@op
def talk(context):
    context.log.info("plain [bold]not markup[/bold] :fire: é 漢字")
    context.log.info("with\\ta tab")
    return 1

@job
def talk_job():
    talk()

defs = Definitions(jobs=[talk_job])
"""


def test_run_prints_user_text_as_it_is_with_or_without_rich(project, home):
    """Piped, plain lines skip rich; a line rich would change (a tab) still goes through it."""
    path = project(LOGGING)
    result = runner.invoke(app, ["-f", str(path), "run", "talk_job"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("Run ") and lines[0].endswith(" of talk_job started")
    assert lines[1:3] == ["  ▶ talk", "    INFO plain [bold]not markup[/bold] :fire: é 漢字"]
    assert lines[3] == "    INFO with   a tab"  # rich expands tabs to 8 columns, as before
    assert lines[4].startswith("  ✔ talk ") and lines[4].endswith("ms")
    assert lines[5].startswith("Run ") and " SUCCESS in " in lines[5]
