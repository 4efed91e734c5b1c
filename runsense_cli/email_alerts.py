"""Email alerts on run failure (Dagster's `make_email_on_run_failure_sensor`), sent with the
standard library's smtplib, so no dependency is needed.

The password lives in memory only, read from the environment at each send when it is an
`EnvVar`: it is never part of a repr, an error, a tick, a log line or the database. SMTP servers
echo what they were sent in their error replies, so every error is redacted for the password in
each spelling, the base64 forms AUTH PLAIN and AUTH LOGIN put on the wire included.
"""

from __future__ import annotations

import base64
import html
import os
import smtplib
import ssl
import traceback
from collections.abc import Callable, Sequence
from email.message import EmailMessage
from typing import Any

from . import secrets
from .errors import DefinitionError, describe
from .jobs import JobDefinition
from .runs import RunStatus
from .secrets import EnvVar
from .sensors import (
    DefaultSensorStatus,
    PermanentReactionError,
    RunFailureSensorContext,
    RunStatusSensorContext,
    RunStatusSensorDefinition,
    SkipReason,
)

# "PLAIN" (no TLS at all) is runsense's addition, for a relay on localhost or a test server;
# Dagster knows "SSL" (port 465) and "STARTTLS" (port 587).
SMTP_TYPES = {"SSL": 465, "STARTTLS": 587, "PLAIN": 25}
ERROR_LIMIT = 500  # characters of a server's reply kept in a reaction's error

Password = str | EnvVar
MessageFn = Callable[[RunFailureSensorContext], str]


def default_subject(context: RunFailureSensorContext) -> str:
    """Dagster's default subject."""
    return f"Dagster Run Failed: {context.dagster_run.job_name}"


def default_body(context: RunFailureSensorContext) -> str:
    """Dagster's default HTML body: job, run id and error, one per line (escaped here, so an
    error such as `<class 'X'>` stays visible)."""
    event = context.failure_event
    message = event.message if event and event.message else "unknown failure"
    run = context.dagster_run
    return "<br>".join(
        [
            f"Job {html.escape(run.job_name, quote=False)} failed!",
            f"Run ID: {html.escape(run.run_id, quote=False)}",
            f"Error: {html.escape(message, quote=False)}",
        ]
    )


class EmailRunFailureSensorDefinition(RunStatusSensorDefinition):
    """A failure sensor whose reaction is one email to every recipient; see the factory."""

    preview_action = "send this email"

    def __init__(
        self,
        email_from: str,
        email_password: Password,
        email_to: Sequence[str],
        email_body_fn: MessageFn | None = None,
        email_subject_fn: MessageFn | None = None,
        smtp_host: str = "smtp.gmail.com",
        smtp_type: str = "SSL",
        smtp_port: int | None = None,
        webserver_base_url: str | None = None,
        *,
        smtp_user: str | None = None,
        timeout_seconds: float = 10.0,
        include_retries: bool = False,
        **sensor_options: Any,
    ) -> None:
        name = sensor_options.get("name") or "email_on_run_failure"
        if not isinstance(email_from, str) or "@" not in email_from:
            raise DefinitionError(f"sensor '{name}': email_from must be an email address")
        if (
            isinstance(email_to, str)
            or not email_to
            or not all(isinstance(a, str) and "@" in a for a in email_to)
        ):
            raise DefinitionError(
                f"sensor '{name}': email_to must be a list of email addresses",
                'e.g. email_to=["oncall@example.com"]',
            )
        if not isinstance(email_password, (str, EnvVar)) or email_password == "":
            raise DefinitionError(
                f"sensor '{name}': email_password must be a string or EnvVar('NAME')",
                "EnvVar reads the password from the environment at each send",
            )
        if smtp_type not in SMTP_TYPES:
            raise DefinitionError(
                f"sensor '{name}': smtp_type \"{smtp_type}\" is not supported",
                'use "SSL" (port 465), "STARTTLS" (port 587) or "PLAIN" (no TLS)',
            )
        if timeout_seconds <= 0:
            raise DefinitionError(f"sensor '{name}': timeout_seconds must be > 0")
        self.email_from = email_from
        self.email_to = list(email_to)
        self.smtp_user = smtp_user or email_from
        self._password = email_password
        self.required_env = (email_password.name,) if isinstance(email_password, EnvVar) else ()
        self.email_body_fn: MessageFn = email_body_fn or default_body
        self.email_subject_fn: MessageFn = email_subject_fn or default_subject
        self.smtp_host = smtp_host
        self.smtp_type = smtp_type
        self.smtp_port = smtp_port or SMTP_TYPES[smtp_type]
        self.webserver_base_url = webserver_base_url.rstrip("/") if webserver_base_url else None
        self.timeout_seconds = float(timeout_seconds)
        self.include_retries = bool(include_retries)
        sensor_options.setdefault(
            "description", f"Emails every failed run to {', '.join(self.email_to)}."
        )
        super().__init__(self._send_for, RunStatus.FAILURE, **sensor_options)

    # -- the message ------------------------------------------------------------------------

    def build_message(self, context: RunStatusSensorContext) -> EmailMessage:
        """The email for this run: what `_send_for` sends and `sensor preview` shows."""
        body = self.email_body_fn(context)  # type: ignore[arg-type]
        if self.webserver_base_url:
            url = f"{self.webserver_base_url}/runs/{context.dagster_run.run_id}"
            body += f'<p><a href="{html.escape(url)}">View in runsense</a></p>'
        message = EmailMessage()
        message["From"] = self.email_from
        message["To"] = ", ".join(self.email_to)
        # A header cannot hold a line break: a subject_fn's newlines become spaces.
        message["Subject"] = " ".join(str(self.email_subject_fn(context)).split())  # type: ignore[arg-type]
        message.set_content(body, subtype="html")
        return message

    def preview_message(self, context: RunStatusSensorContext) -> dict[str, Any]:
        """What would be sent, as JSON for `runsense sensor preview`; never the password."""
        try:
            message = self.build_message(context)
        except Exception as exc:
            raise RuntimeError(secrets.redact(describe(exc), self._secrets(None))) from None
        return {
            "from": self.email_from,
            "to": self.email_to,
            "subject": message["Subject"],
            "body": message.get_content(),
            "smtp": f"{self.smtp_type} {self.smtp_host}:{self.smtp_port}",
        }

    # -- sending ----------------------------------------------------------------------------

    def _send_for(self, context: RunStatusSensorContext) -> SkipReason | None:
        if context.dagster_run.will_retry and not self.include_retries:
            return SkipReason("this run will be retried: no email until its last try")
        password = (
            self._password.get("the email password")
            if isinstance(self._password, EnvVar)
            else self._password
        )
        forms = self._secrets(password)
        try:
            self._send(password, self.build_message(context))
        except PermanentReactionError as exc:
            raise PermanentReactionError(secrets.redact(str(exc), forms)) from None
        except Exception as exc:
            story = "".join(traceback.format_exception(exc))
            if not secrets.contains(story, forms):
                raise
            raise RuntimeError(secrets.redact(story, forms)) from None
        return None

    def _secrets(self, password: str | None) -> list[str]:
        """The password and the base64 forms AUTH PLAIN and AUTH LOGIN send (a server may echo
        either back in its reply)."""
        if password is None:
            password = (
                os.environ.get(self._password.name)
                if isinstance(self._password, EnvVar)
                else self._password
            )
        if not password:
            return []
        plain = f"\0{self.smtp_user}\0{password}".encode()
        return [
            password,
            base64.b64encode(password.encode()).decode("ascii"),
            base64.b64encode(plain).decode("ascii"),
        ]

    def _send(self, password: str, message: EmailMessage) -> None:
        """One SMTP session; 5xx replies park the reaction, the rest (4xx, network) retries."""
        where = f"{self.smtp_host}:{self.smtp_port}"
        try:
            server = self._connect()
            with server:
                if self.smtp_type == "STARTTLS":
                    server.starttls(context=ssl.create_default_context())
                server.login(self.smtp_user, password)
                refused = server.send_message(message, self.email_from, self.email_to)
        except smtplib.SMTPNotSupportedError as exc:
            raise PermanentReactionError(f"the SMTP server at {where}: {exc}") from None
        except smtplib.SMTPRecipientsRefused as exc:
            _refused(exc.recipients, delivered=[])
        except smtplib.SMTPResponseException as exc:
            reply = _reply(exc.smtp_code, exc.smtp_error)
            what = (
                "refused the login of " + self.smtp_user
                if isinstance(exc, smtplib.SMTPAuthenticationError)
                else "answered"
            )
            if 500 <= exc.smtp_code < 600:
                raise PermanentReactionError(
                    f"the SMTP server at {where} {what}: {reply}"
                ) from None
            raise RuntimeError(f"the SMTP server at {where} {what}: {reply}") from None
        except (smtplib.SMTPException, OSError) as exc:
            raise RuntimeError(f"could not send email through {where}: {describe(exc)}") from None
        if refused:
            _refused(refused, delivered=[a for a in self.email_to if a not in refused])

    def _connect(self) -> smtplib.SMTP:
        if self.smtp_type == "SSL":
            return smtplib.SMTP_SSL(
                self.smtp_host,
                self.smtp_port,
                timeout=self.timeout_seconds,
                context=ssl.create_default_context(),
            )
        return smtplib.SMTP(self.smtp_host, self.smtp_port, timeout=self.timeout_seconds)

    def __repr__(self) -> str:
        return f"<email failure sensor {self.name} → {', '.join(self.email_to)}>"


def _reply(code: int, error: bytes | str) -> str:
    text = error.decode("utf-8", "replace") if isinstance(error, bytes) else str(error)
    return f"{code} {text}"[:ERROR_LIMIT]


def _refused(recipients: dict[str, tuple[int, bytes]], delivered: list[str]) -> None:
    """Some recipients refused. Parked when every refusal is permanent (5xx), or when others got
    the email (a retry would send it to them twice); retried when a 4xx refused it to everyone."""
    lines = "; ".join(f"{a}: {_reply(code, error)}" for a, (code, error) in recipients.items())
    permanent = all(500 <= code < 600 for code, _ in recipients.values())
    if delivered:
        raise PermanentReactionError(
            f"sent to {', '.join(delivered)}, but refused for {lines}"[:ERROR_LIMIT]
        )
    if permanent:
        raise PermanentReactionError(f"every recipient was refused: {lines}"[:ERROR_LIMIT])
    raise RuntimeError(f"every recipient was refused for now: {lines}"[:ERROR_LIMIT])


def make_email_on_run_failure_sensor(
    email_from: str,
    email_password: Password,
    email_to: Sequence[str],
    email_body_fn: MessageFn | None = None,
    email_subject_fn: MessageFn | None = None,
    smtp_host: str = "smtp.gmail.com",
    smtp_type: str = "SSL",
    smtp_port: int | None = None,
    name: str | None = None,
    webserver_base_url: str | None = None,
    monitored_jobs: Sequence[JobDefinition | str] | None = None,
    monitor_all_code_locations: bool = False,
    default_status: DefaultSensorStatus = DefaultSensorStatus.STOPPED,
    *,
    smtp_user: str | None = None,
    monitored_tags: dict[str, str] | None = None,
    include_retries: bool = False,
    minimum_interval_seconds: float | None = None,
    max_retries: int = 5,
    retry_delay_seconds: float = 5.0,
    timeout_seconds: float = 10.0,
) -> EmailRunFailureSensorDefinition:
    """A failure sensor that emails each failed run to `email_to` (Dagster's signature).

    Subject "Dagster Run Failed: <job>" and an HTML body with job, run id and error unless
    `email_subject_fn`/`email_body_fn` say otherwise; `webserver_base_url` adds a link to the run.
    `smtp_type` "SSL" (port 465), "STARTTLS" (587) or "PLAIN" (25, no TLS); `smtp_port` overrides.
    `email_password` is a string or `EnvVar("NAME")`, read at each send; the login is `smtp_user`
    (default `email_from`). Refused logins and recipients (5xx) park the reaction at once;
    network errors and 4xx replies are retried `max_retries` times from `retry_delay_seconds`.
    Failures that will be retried send nothing unless `include_retries`.
    """
    return EmailRunFailureSensorDefinition(
        email_from,
        email_password,
        email_to,
        email_body_fn=email_body_fn,
        email_subject_fn=email_subject_fn,
        smtp_host=smtp_host,
        smtp_type=smtp_type,
        smtp_port=smtp_port,
        webserver_base_url=webserver_base_url,
        smtp_user=smtp_user,
        timeout_seconds=timeout_seconds,
        include_retries=include_retries,
        name=name or "email_on_run_failure",
        minimum_interval_seconds=minimum_interval_seconds,
        monitored_jobs=monitored_jobs,
        monitor_all_code_locations=monitor_all_code_locations,
        default_status=default_status,
        max_retries=max_retries,
        retry_delay_seconds=retry_delay_seconds,
        monitored_tags=monitored_tags,
    )
