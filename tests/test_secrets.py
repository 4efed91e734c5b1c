"""Secrets never reach the database, the logs or any output, in any spelling (SPEC §9).

A token holding CR/LF makes http.client refuse the header and quote it as bytes; a token with
URL-special characters travels percent-encoded; a proxy can echo it in an error that runsense cuts
to 200 characters. `runsense_cli.secrets.redact` must catch every one of them, before any cut.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest
from typer.testing import CliRunner

from runsense_cli.cli import app
from runsense_cli.secrets import PLACEHOLDER, redact
from runsense_cli.storage import open_storage
from tests.slack_server import FakeSlack

CRLF_TOKEN = "xoxb-crlf-7f3a9c\r\nX-Injected: 5b4a3210e"
URL_TOKEN = "xoxb-url/7e?c=d&e f%g+h#i'\"j"


def spellings(token: str) -> dict[str, str]:
    """The forms a test looks for: none of them may be left anywhere."""
    return {
        "exact": token,
        "repr": repr(token)[1:-1],
        "bytes repr": repr(token.encode())[2:-1],
        "json": json.dumps(token)[1:-1],
        "url-quoted": quote(token),
        "url-quoted, nothing safe": quote(token, safe=""),
        "url-quoted plus": quote_plus(token),
        "prefix": token[:8],
    }


CASES = [
    pytest.param(token, name, form, id=f"{label} {name}")
    for label, token in (("crlf", CRLF_TOKEN), ("url", URL_TOKEN))
    for name, form in spellings(token).items()
    if name != "prefix"
]


@pytest.mark.parametrize(("token", "name", "form"), CASES)
def test_every_spelling_is_redacted_inside_a_message(token, name, form):
    message = f"POST failed (Authorization: Bearer {form}) after 3 tries"
    assert (
        redact(message, [token])
        == f"POST failed (Authorization: Bearer {PLACEHOLDER}) after 3 tries"
    )


@pytest.mark.parametrize("token", [CRLF_TOKEN, URL_TOKEN])
def test_a_prefix_left_by_a_cut_is_redacted_at_the_end_or_inside_a_longer_message(token):
    for form in (token, quote(token), repr(token)[1:-1]):
        for keep in (8, 9, len(form) - 1):
            cut = ("x" * 30 + form)[: 30 + keep]
            assert redact(cut, [token]) == "x" * 30 + PLACEHOLDER
            assert redact(f"error: {cut} for #alerts", [token]) == (
                f"error: {'x' * 30}{PLACEHOLDER} for #alerts"
            )
    assert redact("xoxb-cr and more", [CRLF_TOKEN]) == "xoxb-cr and more"  # 7 characters


def test_redact_leaves_other_text_alone_and_handles_short_and_missing_secrets():
    assert redact("nothing to hide here", [CRLF_TOKEN, URL_TOKEN, None, ""]) == (
        "nothing to hide here"
    )
    assert (
        redact("pw=hunter2; again hunter2", ["hunter2"]) == f"pw={PLACEHOLDER}; again {PLACEHOLDER}"
    )
    assert redact("", ["hunter2"]) == ""


PROJECT = """
import json, os
from urllib.parse import quote, quote_plus
from runsense_cli import (
    Definitions, EnvVar, PermanentReactionError, job, make_slack_on_run_failure_sensor, op,
)

FAST = dict(timeout_seconds=1.0, http_retries=0, http_backoff_seconds=0.01, max_retries=0)

@op
def boom():
    raise ValueError("x")

@job
def boom_job():
    boom()

def spelled(variable):
    def text_fn(context):
        token = os.environ[variable]
        raise RuntimeError(
            f"render failed: {token!r} {json.dumps(token)} {quote(token)} {quote_plus(token)} "
            f"{token.encode()!r} {token[:12]}"
        )
    return text_fn

def refuse(variable):
    def text_fn(context):
        raise PermanentReactionError(f"token {os.environ[variable]!r} was revoked")
    return text_fn

sensors = [
    # http.client refuses the CR/LF header and quotes it as bytes in its error
    make_slack_on_run_failure_sensor("#crlf", EnvVar("CRLF_TOKEN"), name="crlf", **FAST),
    # a text_fn error spelling the tokens in several ways
    make_slack_on_run_failure_sensor(
        "#a", EnvVar("CRLF_TOKEN"), name="render_crlf", text_fn=spelled("CRLF_TOKEN"), **FAST
    ),
    make_slack_on_run_failure_sensor(
        "#a", EnvVar("URL_TOKEN"), name="render_url", text_fn=spelled("URL_TOKEN"), **FAST
    ),
    # the server (a proxy) echoes the token, URL-quoted, or after 190 characters
    make_slack_on_run_failure_sensor("#echo", EnvVar("URL_TOKEN"), name="echo", **FAST),
    make_slack_on_run_failure_sensor("#cut", EnvVar("URL_TOKEN"), name="cut", **FAST),
    # a text_fn parking the reaction with a message that spells the token
    make_slack_on_run_failure_sensor(
        "#a", EnvVar("URL_TOKEN"), name="perm", text_fn=refuse("URL_TOKEN"), **FAST
    ),
]
defs = Definitions(jobs=[boom_job], sensors=sensors)
"""


def test_tokens_with_crlf_and_url_characters_never_reach_storage_or_output(
    home, tmp_path, monkeypatch, capsys
):
    project = tmp_path / "secret_spellings.py"
    project.write_text(PROJECT)
    monkeypatch.setenv("CRLF_TOKEN", CRLF_TOKEN)
    monkeypatch.setenv("URL_TOKEN", URL_TOKEN)
    runner = CliRunner()
    outputs = []
    with FakeSlack() as slack:
        monkeypatch.setenv("RUNSENSE_SLACK_BASE_URL", slack.url)
        echoed = f"proxy_error: bad token {quote(URL_TOKEN)} {quote_plus(URL_TOKEN)} {json.dumps(URL_TOKEN)}"
        slack.script(echoed, channel="#echo")
        slack.script("x" * 190 + URL_TOKEN, channel="#cut")
        commands = [
            ["sensor", "start", "--all"],
            ["run", "boom_job"],
            ["-v", "sensor", "tick"],
            ["sensor", "failures"],
            ["sensor", "failures", "--json"],
            ["runs", "list", "--json"],
        ]
        for name in ("crlf", "render_crlf", "render_url", "echo", "cut", "perm"):
            commands += [["sensor", "ticks", name], ["sensor", "ticks", name, "--json"]]
        stdouts: list[str] = []
        for args in commands:
            result = runner.invoke(app, ["-f", str(project), *args])
            outputs.append(result.output + (result.stderr or ""))
            stdouts.append(result.stdout)
        run_id = open_storage().list_runs()[0].run_id
        for name in ("render_crlf", "render_url", "perm"):
            preview = runner.invoke(
                app, ["-f", str(project), "sensor", "preview", name, "--run", run_id]
            )
            # The preview (JSON) alone goes to stdout; notes and this failure go to stderr.
            assert preview.exit_code == 0 and "would fail" in preview.stderr, preview.output
            assert PLACEHOLDER in preview.stderr
            outputs.append(preview.output + (preview.stderr or ""))
    failures = json.loads(stdouts[4])  # stderr says no daemon runs
    errors = {f["sensor"]: f["error"] for f in failures}
    assert set(errors) == {"crlf", "render_crlf", "render_url", "echo", "cut", "perm"}, errors
    assert f"Invalid header value b'Bearer {PLACEHOLDER}'" in errors["crlf"]
    assert errors["cut"].endswith(PLACEHOLDER + " for #cut")
    assert errors["perm"] == f"PermanentReactionError: token '{PLACEHOLDER}' was revoked"
    assert all(PLACEHOLDER in error for error in errors.values()), errors
    assert slack.posts() == []

    everything = "".join(outputs) + "".join(capsys.readouterr())
    stored = b"".join(path.read_bytes() for path in Path(home).rglob("*") if path.is_file())
    assert stored  # the database and its WAL were written
    for token in (CRLF_TOKEN, URL_TOKEN):
        for name, form in spellings(token).items():
            assert form not in everything, (name, form)
            assert form.encode() not in stored, (name, form)
