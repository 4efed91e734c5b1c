"""Email alerts with the standard library's smtplib, over real sockets, against a local SMTP server
(tests/smtp_server.py). TLS ("SSL" and "STARTTLS") is tested with a throwaway certificate made by
the openssl command, trusted through SSL_CERT_FILE; without openssl those tests skip."""

from __future__ import annotations

import base64
import json

import pytest
from typer.testing import CliRunner

from runsense_cli import EnvVar, make_email_on_run_failure_sensor
from runsense_cli.cli import app
from runsense_cli.errors import DefinitionError
from runsense_cli.records import ReactionState
from runsense_cli.storage import open_storage
from tests.smtp_server import PASSWORD, USER, FakeSMTP, self_signed, server_context
from tests.test_slack import FAILURE, Clock, nightly, reactions, started

TO = ["oncall@example.com", "lead@example.com"]


@pytest.fixture
def smtp():
    with FakeSMTP() as server:
        yield server


def email_sensor(server: FakeSMTP, password=PASSWORD, **options):
    options.setdefault("smtp_type", "PLAIN")
    return make_email_on_run_failure_sensor(
        USER, password, TO, smtp_host="127.0.0.1", smtp_port=server.port, **options
    )


def test_a_failed_run_sends_one_email_with_dagsters_subject_and_body_to_everyone(smtp):
    sensor = email_sensor(smtp)
    assert sensor.name == "email_on_run_failure"
    evaluator = started(sensor)
    run_id = nightly.execute_in_process().run_id
    evaluator.tick(sensor)
    assert [r.state for r in reactions(evaluator, sensor)] == [ReactionState.SUCCESS]
    [sent] = smtp.messages
    assert (sent.mail_from, sent.rcpt_to) == (USER, TO)
    assert sent.message["Subject"] == "Dagster Run Failed: nightly"
    assert sent.message["To"] == ", ".join(TO) and sent.message["From"] == USER
    assert sent.message.get_content_type() == "text/html"
    assert sent.message.get_content().strip() == (
        f"Job nightly failed!<br>Run ID: {run_id}<br>Error: {FAILURE}"
    )
    assert smtp.logins == [(USER, True)]
    evaluator.tick(sensor)
    assert len(smtp.messages) == 1  # handled once


def test_custom_subject_and_body_functions_and_a_link_to_the_run(smtp):
    sensor = email_sensor(
        smtp,
        email_subject_fn=lambda c: f"[runsense]\n{c.dagster_run.job_name} is down",
        email_body_fn=lambda c: f"<b>{c.dagster_run.job_name}</b>: {c.failure_event.message}",
        webserver_base_url="http://runs.example.com/",
        name="custom_email",
    )
    evaluator = started(sensor)
    run_id = nightly.execute_in_process().run_id
    evaluator.tick(sensor)
    [sent] = smtp.messages
    assert sent.message["Subject"] == "[runsense] nightly is down"  # no line break in a header
    assert sent.message.get_content().strip() == (
        f"<b>nightly</b>: {FAILURE}"
        f'<p><a href="http://runs.example.com/runs/{run_id}">View in runsense</a></p>'
    )


def test_a_missing_password_variable_fails_the_reaction_naming_it_until_it_is_set(
    smtp, monkeypatch
):
    monkeypatch.delenv("SMTP_PASSWORD", raising=False)
    sensor = email_sensor(smtp, EnvVar("SMTP_PASSWORD"), retry_delay_seconds=0)
    assert sensor.required_env == ("SMTP_PASSWORD",)
    evaluator = started(sensor)
    nightly.execute_in_process()
    evaluator.tick(sensor)
    [reaction] = reactions(evaluator, sensor)
    assert reaction.state == ReactionState.RETRYING
    assert "the email password is missing: set the environment variable SMTP_PASSWORD" in (
        reaction.error
    )
    assert smtp.connections == 0
    monkeypatch.setenv("SMTP_PASSWORD", PASSWORD)
    evaluator.tick(sensor)
    assert [r.state for r in reactions(evaluator, sensor)] == [ReactionState.SUCCESS]
    assert len(smtp.messages) == 1


def test_the_server_down_is_retried_and_the_email_arrives_once_when_it_is_back():
    clock = Clock()
    server = FakeSMTP().start(listen=False)  # the port is held, connections are refused
    try:
        sensor = email_sensor(server, retry_delay_seconds=1)
        evaluator = started(sensor, clock=clock)
        nightly.execute_in_process()
        evaluator.tick(sensor)
        [reaction] = reactions(evaluator, sensor)
        assert reaction.state == ReactionState.RETRYING
        assert "could not send email through 127.0.0.1" in reaction.error
        assert "ConnectionRefusedError" in reaction.error
        server.listen()
        evaluator.tick(sensor)  # not due yet
        assert server.messages == []
        clock.now += 2
        evaluator.tick(sensor)
        clock.now += 60
        evaluator.tick(sensor)
        assert [r.state for r in reactions(evaluator, sensor)] == [ReactionState.SUCCESS]
        assert len(server.messages) == 1
    finally:
        server.stop()


def test_a_4xx_reply_is_retried_and_a_5xx_recipient_parks_at_once(smtp):
    clock = Clock()
    smtp.script("MAIL", "451 4.3.0 try again later")
    later = email_sensor(smtp, retry_delay_seconds=1, name="later")
    evaluator = started(later, clock=clock)
    nightly.execute_in_process()
    evaluator.tick(later)
    [reaction] = reactions(evaluator, later)
    assert reaction.state == ReactionState.RETRYING and "451 4.3.0" in reaction.error
    clock.now += 2
    evaluator.tick(later)
    assert [r.state for r in reactions(evaluator, later)] == [ReactionState.SUCCESS]
    assert [m.rcpt_to for m in smtp.messages] == [TO]

    smtp.refuse = {"nobody@example.com"}
    bad = make_email_on_run_failure_sensor(
        USER, PASSWORD, ["nobody@example.com"], smtp_host="127.0.0.1", smtp_port=smtp.port,
        smtp_type="PLAIN", name="bad",
    )  # fmt: skip
    evaluator = started(bad)
    nightly.execute_in_process()
    evaluator.tick(bad)
    [reaction] = reactions(evaluator, bad)
    assert (reaction.state, reaction.attempts) == (ReactionState.DEAD, 1)
    assert "550 5.1.1 <nobody@example.com>" in reaction.error


def test_starttls_against_a_server_without_it_parks_before_the_password_is_sent(smtp):
    sensor = email_sensor(smtp, smtp_type="STARTTLS")
    evaluator = started(sensor)
    nightly.execute_in_process()
    evaluator.tick(sensor)
    [reaction] = reactions(evaluator, sensor)
    assert (reaction.state, reaction.attempts) == (ReactionState.DEAD, 1)
    assert "STARTTLS extension not supported by server" in reaction.error
    assert not any(line.upper().startswith("AUTH") for line in smtp.transcript)
    assert smtp.logins == [] and smtp.messages == []


@pytest.fixture
def certificate(tmp_path, monkeypatch):
    """A self-signed certificate for localhost, trusted by ssl.create_default_context()."""
    made = self_signed(tmp_path)
    if made is None:
        pytest.skip("the openssl command is not installed: no certificate for the TLS tests")
    monkeypatch.setenv("SSL_CERT_FILE", str(made[0]))
    return server_context(*made)


@pytest.mark.parametrize("smtp_type", ["SSL", "STARTTLS"])
def test_ssl_and_starttls_verify_the_certificate_and_send(certificate, smtp_type):
    with FakeSMTP(tls=certificate, implicit_tls=smtp_type == "SSL") as server:
        sensor = make_email_on_run_failure_sensor(
            USER, PASSWORD, TO, smtp_host="localhost", smtp_port=server.port, smtp_type=smtp_type
        )
        evaluator = started(sensor)
        nightly.execute_in_process()
        evaluator.tick(sensor)
        assert [r.state for r in reactions(evaluator, sensor)] == [ReactionState.SUCCESS]
        assert [m.message["Subject"] for m in server.messages] == ["Dagster Run Failed: nightly"]
        if smtp_type == "STARTTLS":
            assert server.transcript[1] == "STARTTLS"  # before AUTH, which is then encrypted


def test_an_untrusted_certificate_is_refused_and_retried(certificate, monkeypatch):
    monkeypatch.delenv("SSL_CERT_FILE")
    with FakeSMTP(tls=certificate, implicit_tls=True) as server:
        sensor = make_email_on_run_failure_sensor(
            USER, PASSWORD, TO, smtp_host="localhost", smtp_port=server.port
        )
        evaluator = started(sensor)
        nightly.execute_in_process()
        evaluator.tick(sensor)
        [reaction] = reactions(evaluator, sensor)
        assert reaction.state == ReactionState.RETRYING
        assert "CERTIFICATE_VERIFY_FAILED" in reaction.error
        assert server.logins == []


def test_bad_definitions_are_refused():
    with pytest.raises(DefinitionError, match='smtp_type "TLS" is not supported'):
        make_email_on_run_failure_sensor(USER, PASSWORD, TO, smtp_type="TLS")
    with pytest.raises(DefinitionError, match="email_to must be a list of email addresses"):
        make_email_on_run_failure_sensor(USER, PASSWORD, "oncall@example.com")  # type: ignore[arg-type]
    with pytest.raises(DefinitionError, match="email_password must be a string or EnvVar"):
        make_email_on_run_failure_sensor(USER, None, TO)  # type: ignore[arg-type]
    sensor = make_email_on_run_failure_sensor(USER, PASSWORD, TO)
    assert (sensor.smtp_host, sensor.smtp_type, sensor.smtp_port) == ("smtp.gmail.com", "SSL", 465)
    assert PASSWORD not in repr(sensor) and PASSWORD not in repr(vars(sensor).get("description"))


WRONG = "wrong-Inline-pw-9d8e7f-secret"
SECRET_PROJECT = """
from runsense_cli import Definitions, EnvVar, job, op, make_email_on_run_failure_sensor
@op
def boom():
    raise ValueError("x")
@job
def boom_job():
    boom()
common = dict(smtp_host="127.0.0.1", smtp_port={port}, smtp_type="PLAIN", retry_delay_seconds=0)
ok = make_email_on_run_failure_sensor("{user}", EnvVar("SMTP_PASSWORD"), ["a@example.com"], **common)
wrong = make_email_on_run_failure_sensor("{user}", "{wrong}", ["a@example.com"], name="wrong", **common)
spelled = make_email_on_run_failure_sensor("{user}", "{wrong}", ["a@example.com"], name="spelled", email_body_fn=lambda c: 1 / 0, **common)
defs = Definitions(jobs=[boom_job], sensors=[ok, wrong, spelled])
"""


def test_a_wrong_password_parks_at_once_and_no_password_is_stored_or_printed(
    smtp, home, tmp_path, monkeypatch, capsys, caplog
):
    """The server echoes the user, the password and the AUTH blob in its 535 reply."""
    project = tmp_path / "email_secret_project.py"
    project.write_text(SECRET_PROJECT.format(port=smtp.port, user=USER, wrong=WRONG))
    monkeypatch.setenv("SMTP_PASSWORD", PASSWORD)
    runner = CliRunner()
    outputs = []
    for args in (
        ["sensor", "start", "--all"],
        ["run", "boom_job"],
        ["-v", "sensor", "tick"],
        ["sensor", "failures", "--json"],
        *(["sensor", "ticks", n, "--json"] for n in ("email_on_run_failure", "wrong", "spelled")),
        ["-v", "sensor", "list"],
        ["sensor", "preview", "spelled", "--run", "LAST"],
    ):
        if args[-1] == "LAST":
            args[-1] = open_storage().list_runs()[0].run_id
        result = runner.invoke(app, ["-f", str(project), *args])
        outputs.append(result.output + (result.stderr or ""))
    failures = json.loads(
        runner.invoke(app, ["-f", str(project), "sensor", "failures", "--json"]).stdout
    )
    by_sensor = {f["sensor"]: f for f in failures}
    assert by_sensor["wrong"]["state"] == "DEAD" and by_sensor["wrong"]["attempts"] == 1
    assert "535 5.7.8 Authentication failed" in by_sensor["wrong"]["error"]
    assert "<redacted>" in by_sensor["wrong"]["error"]
    assert "ZeroDivisionError" in by_sensor["spelled"]["error"]
    assert [m.rcpt_to for m in smtp.messages] == [["a@example.com"]]
    assert (USER, False) in smtp.logins  # the wrong password really reached the server

    everything = "".join(outputs) + "".join(capsys.readouterr()) + caplog.text
    stored = b"".join(path.read_bytes() for path in home.iterdir() if path.is_file())
    wire = [
        base64.b64encode(WRONG.encode()).decode(),
        base64.b64encode(f"\0{USER}\0{WRONG}".encode()).decode(),
    ]
    for secret in (PASSWORD, WRONG, *wire):
        assert secret not in everything
        assert secret.encode() not in stored
        assert secret[:12] not in everything


def test_sensor_start_warns_when_the_password_variable_is_unset(smtp, tmp_path, monkeypatch):
    monkeypatch.delenv("SMTP_PASSWORD", raising=False)
    project = tmp_path / "email_warn_project.py"
    project.write_text(SECRET_PROJECT.format(port=smtp.port, user=USER, wrong=WRONG))
    result = CliRunner().invoke(
        app, ["-f", str(project), "sensor", "start", "email_on_run_failure"]
    )
    assert result.exit_code == 0, result.output
    assert "warning: $SMTP_PASSWORD is not set: email_on_run_failure's reactions will fail" in (
        result.stderr
    )


def test_preview_shows_the_email_and_sends_nothing(smtp, tmp_path, monkeypatch):
    monkeypatch.setenv("SMTP_PASSWORD", PASSWORD)
    project = tmp_path / "email_preview_project.py"
    project.write_text(SECRET_PROJECT.format(port=smtp.port, user=USER, wrong=WRONG))
    runner = CliRunner()
    runner.invoke(app, ["-f", str(project), "sensor", "start", "email_on_run_failure"])
    assert runner.invoke(app, ["-f", str(project), "run", "boom_job"]).exit_code == 1
    run_id = open_storage().list_runs()[0].run_id
    result = runner.invoke(app, ["-f", str(project), "sensor", "preview", "email_on_run_failure"])
    assert result.exit_code == 0, result.output
    assert "would send this email (nothing is sent)" in result.stderr
    [email] = json.loads(result.stdout)  # the waiting events' emails, alone on stdout
    assert email["to"] == ["a@example.com"] and email["from"] == USER
    assert email["subject"] == "Dagster Run Failed: boom_job"
    assert f"Run ID: {run_id}" in email["body"] and "ValueError: x" in email["body"]
    assert PASSWORD not in result.output
    assert smtp.connections == 0
