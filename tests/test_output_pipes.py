"""Output for people and scripts (SPEC §13): rows never fold in a pipe, ages in human units,
shell completion, --limit 0."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from runsense_cli.cli.render import age
from tests.processes import RUNSENSE, RUNSENSE_SCRIPT, cli, env_for

LONG = "a_job_with_a_really_quite_long_name_that_would_fold_in_forty_columns"
PROJECT = f"""
from runsense_cli import Definitions, job, op

@op
def step():
    pass

@job(name="{LONG}")
def long_job():
    step()

@job
def short_job():
    step()

defs = Definitions(jobs=[long_job, short_job])
"""


@pytest.fixture
def proj(tmp_path: Path) -> Path:
    path = tmp_path / "proj" / "pipedefs.py"
    path.parent.mkdir()
    path.write_text(PROJECT)
    return path


@pytest.mark.parametrize("columns", ["40", "200"])
def test_piped_tables_keep_one_row_per_line(home, proj, columns):
    for job in (LONG, "short_job", LONG):
        assert cli(home, proj, "run", job).returncode == 0
    done = subprocess.run(
        [*RUNSENSE, "-f", str(proj), "runs", "list"],
        env=env_for(home, COLUMNS=columns),
        stdout=subprocess.PIPE,
        text=True,
        check=True,
    )
    lines = done.stdout.splitlines()
    assert len(lines) == 3 + 4  # three rows, the header, and three rules
    assert sum(LONG in line for line in lines) == 2  # each long name whole, on its row


def test_limit_zero_lists_every_run(home, proj):
    for _ in range(3):
        cli(home, proj, "run", "short_job")
    runs = json.loads(cli(home, proj, "runs", "list", "--limit", "0", "--json").stdout)
    assert len(runs) == 3
    assert len(json.loads(cli(home, proj, "runs", "list", "-n", "1", "--json").stdout)) == 1


def test_ages_in_human_units():
    assert [age(s) for s in (5, 125, 2 * 3600 + 5 * 60 + 7, 3 * 86400 + 60, 3 * 86400 + 7200)] == [
        "5s",
        "2m 5s",
        "2h 5m",
        "3d",
        "3d 2h",
    ]


def complete(home: Path, proj: Path, words: str) -> list[str]:
    env = env_for(
        home,
        _RUNSENSE_COMPLETE="complete_bash",
        COMP_WORDS=words,
        COMP_CWORD=str(len(words.split()) - (0 if words.endswith(" ") else 1)),
    )
    done = subprocess.run(
        [*RUNSENSE_SCRIPT], env=env, cwd=proj.parent, capture_output=True, text=True
    )
    return done.stdout.split()


def test_shell_completion_of_jobs_statuses_and_run_ids(home, proj):
    if not RUNSENSE_SCRIPT[0].endswith("runsense"):
        pytest.skip("the runsense console script is not installed")
    (proj.parent / "runsense.toml").write_text('module = "pipedefs"\n')
    assert complete(home, proj, "runsense run sh") == ["short_job"]
    assert complete(home, proj, "runsense runs list --status fa") == ["failure"]
    run_id = json.loads(cli(home, proj, "run", "short_job", "--json").stdout)["run_id"]
    assert complete(home, proj, f"runsense runs show {run_id[:6]}") == [run_id]
    assert os.environ.get("_RUNSENSE_COMPLETE") is None


def test_sensor_tick_and_cursor_print_one_json_document(home, project):
    """SPEC §13: --json on `sensor tick` and `sensor cursor`: stdout holds only the document."""
    import json
    import subprocess

    from tests.helpers import PROJECT
    from tests.processes import RUNSENSE, env_for

    path = project(PROJECT)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*RUNSENSE, "-f", str(path), *args],
            env=env_for(home),
            capture_output=True,
            text=True,
            timeout=60,
        )

    assert run("sensor", "start", "report_status_sensor").returncode == 0
    assert run("run", "ok_job").returncode == 0
    ticked = run("sensor", "tick", "report_status_sensor", "--json")
    assert ticked.returncode == 0, ticked.stderr
    [tick] = json.loads(ticked.stdout)
    assert (tick["sensor"], tick["reactions"], len(tick["run_ids"])) == (
        "report_status_sensor",
        1,
        1,
    )
    assert "Running 1 requested run" in ticked.stderr
    moved = run("sensor", "cursor", "report_status_sensor", "--from-now", "--json")
    document = json.loads(moved.stdout)
    assert document["cursor"] == document["newest_event_id"] and document["lag"] == 0


def test_on_an_80_column_terminal_ids_names_statuses_and_times_stay_whole(home, project):
    """SPEC §13 on a terminal (a real pseudo-terminal): nothing but the free text is cut."""
    import os
    import re
    import subprocess

    from tests.helpers import PROJECT
    from tests.processes import RUNSENSE, env_for

    path = project(PROJECT)
    env = env_for(home, COLUMNS="80")
    from runsense_cli.project import find_project, load_project

    job = load_project(find_project(file=str(path))).get_job("status_reporting_job")
    config = {"ops": {"status_report": {"config": {"job_name": "x"}}}}
    assert job.execute_in_process(config).success  # trigger "execute_in_process": too wide
    leader, follower = os.openpty()
    listing = subprocess.run(
        [*RUNSENSE, "-f", str(path), "runs", "list"], env=env, stdout=follower, timeout=60
    )
    os.close(follower)
    raw = os.read(leader, 100_000).decode()
    os.close(leader)
    assert listing.returncode == 0
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line) for line in raw.splitlines()]
    row = next(line for line in lines if "status_reporting_job" in line)
    assert all(len(line) <= 80 for line in lines)
    assert re.search(r"│ [0-9a-f]{8} │ status_reporting_job │ SUCCESS │ \d\d:\d\d:\d\d │", row)
    assert "…" in row  # the trigger gave way


def test_piped_runs_tables_drawn_without_rich_are_the_ones_rich_draws(capsys):
    """plain.table_text stands in for rich on a pipe (runs list): the same text, for cells of
    any plain ASCII, and None (rich draws it) for anything else."""
    import random
    import string
    import time

    from runsense_cli.cli import render
    from runsense_cli.cli.plain import table_text
    from runsense_cli.runs import RunRecord, RunStatus

    rng = random.Random(7)
    plain = string.printable[:95]  # every printable ASCII character, space included

    def text(alphabet: str, most: int = 14) -> str:
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, most)))

    def runs(alphabet: str) -> list[RunRecord]:
        now = time.time()
        return [
            RunRecord(
                f"{rng.getrandbits(32):08x}-run",
                text(alphabet),
                rng.choice(list(RunStatus)),
                "loc",
                tags=rng.choice([{}, {"runsense/launched_by": text(alphabet)}]),
                created_at=now - rng.uniform(0, 5 * 86400),
                start_time=rng.choice([None, now - rng.uniform(0, 5 * 86400)]),
                end_time=now,
            )
            for _ in range(rng.randint(1, 6))
        ]

    def drawn(batch: list[RunRecord]) -> tuple[str | None, str]:
        cells = [render.runs_cells(run) for run in batch]
        render.console().print(render.runs_table(batch))
        return table_text(render.RUNS_HEADERS, cells), capsys.readouterr().out

    compared = 0
    for _ in range(300):
        mine, theirs = drawn(runs(plain))
        if mine is not None:
            compared += 1
            assert mine == theirs
    assert compared > 50  # cells with [ ] or \ are rich's to draw; the rest were compared
    for odd in ("tab\there", "wide 表", "e\u0301", "[bold]x[/bold]", "back\\"):
        batch = runs("ab")
        batch[0] = RunRecord(batch[0].run_id, odd, RunStatus.SUCCESS, "loc", created_at=1.0)
        assert drawn(batch)[0] is None
