"""Slack alerts on run failure, posted with the real slack_sdk client.

Only projects that use `make_slack_on_run_failure_sensor` import this module, and slack_sdk itself
is imported at the first post, so it never slows down other commands. The token lives in memory
only: it is never part of a repr, an error, a tick, a log line or the database.
"""

from __future__ import annotations

import os
import random
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from . import secrets, slack_threads
from .errors import DefinitionError, describe
from .jobs import JobDefinition
from .page_sensors import SensorPage
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

BASE_URL_ENV = "RUNSENSE_SLACK_BASE_URL"
DEFAULT_BASE_URL = "https://slack.com/api/"
SECTION_LIMIT = 3000  # Slack rejects a section whose text is longer (invalid_blocks)
TEXT_LIMIT = 40000  # and a message whose top-level text is longer (msg_too_long)
TRUNCATION_MARKER = "… (truncated)"

# Slack error codes that no retry can fix: the reaction is parked at once, naming the code.
# Anything else (ratelimited after our retries, internal_error, fatal_error, ...) is retried.
PERMANENT_SLACK_ERRORS = frozenset(
    {
        # the token
        "invalid_auth",
        "not_authed",
        "account_inactive",
        "token_revoked",
        "token_expired",
        "not_allowed_token_type",
        "no_permission",
        "missing_scope",
        "access_denied",
        "team_access_not_granted",
        "ekm_access_denied",
        "two_factor_setup_required",
        "org_login_required",
        "enterprise_is_restricted",
        # the channel
        "channel_not_found",
        "not_in_channel",
        "is_archived",
        "restricted_action",
        # the message
        "msg_too_long",
        "no_text",
        "invalid_blocks",
        "invalid_blocks_format",
        "invalid_arguments",
    }
)


Token = str | EnvVar
TextFn = Callable[[RunFailureSensorContext], str]
BlocksFn = Callable[[RunFailureSensorContext], list[dict[str, Any]]]


class _ProportionalJitter:
    """slack_sdk's default jitter adds up to a whole second to every back-off; spread by half the
    interval instead, so a small `http_backoff_seconds` really is small."""

    def recalculate(self, duration: float) -> float:
        return duration * (1 + random.random() / 2)


class _RedactingFilter:
    """Redacts every token runsense has handed to slack_sdk from slack_sdk's log records, which
    quote raw request headers (the token, CR/LF and all)."""

    def __init__(self) -> None:
        self.tokens: set[str] = set()

    def filter(self, record: Any) -> bool:
        message = record.getMessage()
        record.msg, record.args = secrets.redact(message, self.tokens), None
        return True


_REDACT = _RedactingFilter()


def _sdk_logger(token: str) -> Any:
    """slack_sdk's logger for our clients: redacted, and silent unless the user configures
    logging (a NullHandler keeps Python's last-resort handler from printing its ERROR lines;
    runsense reports every Slack error itself, on the reaction)."""
    import logging

    _REDACT.tokens.add(token)
    logger = logging.getLogger("runsense.slack_sdk")
    if not logger.filters:
        logger.addFilter(_REDACT)
        logger.addHandler(logging.NullHandler())
    return logger


def slack_client(
    token: str, timeout_seconds: float = 10.0, retries: int = 2, backoff_seconds: float = 0.5
) -> Any:
    """A WebClient on `RUNSENSE_SLACK_BASE_URL` (or Slack's) with slack_sdk's own retry handlers.

    Rate limits wait for Retry-After; 500/503 answers, refused or dropped connections and timeouts
    back off exponentially. `retries` bounds each kind within one post.
    """
    from http.client import HTTPException

    from slack_sdk import WebClient
    from slack_sdk.http_retry.builtin_handlers import (
        ConnectionErrorRetryHandler,
        RateLimitErrorRetryHandler,
        ServerErrorRetryHandler,
    )
    from slack_sdk.http_retry.builtin_interval_calculators import BackoffRetryIntervalCalculator

    backoff = BackoffRetryIntervalCalculator(backoff_seconds, jitter=_ProportionalJitter())  # type: ignore[arg-type]
    base_url = os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
    return WebClient(
        token=token,
        logger=_sdk_logger(token),
        base_url=base_url if base_url.endswith("/") else base_url + "/",
        timeout=timeout_seconds,  # type: ignore[arg-type]  # urllib takes float seconds
        retry_handlers=[
            RateLimitErrorRetryHandler(max_retry_count=retries),
            ServerErrorRetryHandler(max_retry_count=retries, interval_calculator=backoff),
            # OSError covers URLError, refused and reset connections and socket timeouts.
            ConnectionErrorRetryHandler(
                max_retry_count=retries,
                interval_calculator=backoff,
                error_types=[OSError, HTTPException],
            ),
        ],
    )


def cut(text: str, limit: int = SECTION_LIMIT) -> str:
    """Cut `text` to `limit` characters, ending with a visible marker when anything was dropped."""
    if len(text) <= limit:
        return text
    return text[: limit - len(TRUNCATION_MARKER)] + TRUNCATION_MARKER


def default_text(context: RunFailureSensorContext) -> str:
    """Dagster's default body; the message is cut inside the code fence so the fence stays closed."""
    event = context.failure_event
    message = event.message if event and event.message else "unknown failure"
    return f"Error: ```{cut(message, SECTION_LIMIT - len('Error: ``````'))}```"


class SlackRunFailureSensorDefinition(RunStatusSensorDefinition):
    """A failure sensor whose reaction is one `chat.postMessage`; see the factory for the options."""

    preview_action = "post this to Slack"
    previews_pages = True  # its page function honours `page.preview`

    def __init__(
        self,
        channel: str,
        slack_token: Token,
        text_fn: TextFn | None = None,
        blocks_fn: BlocksFn | None = None,
        webserver_base_url: str | None = None,
        *,
        timeout_seconds: float = 10.0,
        http_retries: int = 2,
        http_backoff_seconds: float = 0.5,
        incidents: bool = False,
        include_retries: bool = False,
        digest_threshold: int | None = None,
        **sensor_options: Any,
    ) -> None:
        name = sensor_options.get("name") or "slack_on_run_failure"
        if digest_threshold is not None and (
            not isinstance(digest_threshold, int) or digest_threshold < 1
        ):
            raise DefinitionError(f"sensor '{name}': digest_threshold must be an int >= 1")
        self.incidents = bool(incidents)
        self.include_retries = bool(include_retries)
        self.digest_threshold = digest_threshold
        if not isinstance(channel, str) or not channel:
            raise DefinitionError(f"sensor '{name}': channel must be a Slack channel name or id")
        if not isinstance(slack_token, (str, EnvVar)) or slack_token == "":
            raise DefinitionError(
                f"sensor '{name}': slack_token must be a string or EnvVar('NAME')",
                "EnvVar reads the token from the environment at each post",
            )
        if timeout_seconds <= 0 or http_retries < 0 or http_backoff_seconds < 0:
            raise DefinitionError(
                f"sensor '{name}': timeout_seconds must be > 0, http_retries and "
                "http_backoff_seconds >= 0"
            )
        self.channel = channel
        self._token = slack_token
        self.required_env = (slack_token.name,) if isinstance(slack_token, EnvVar) else ()
        self.text_fn: TextFn = text_fn or default_text
        self.blocks_fn = blocks_fn
        self.webserver_base_url = webserver_base_url.rstrip("/") if webserver_base_url else None
        self.timeout_seconds = float(timeout_seconds)
        self.http_retries = int(http_retries)
        self.http_backoff_seconds = float(http_backoff_seconds)
        sensor_options.setdefault("description", f"Posts every failed run to Slack {channel}.")
        # Threads and digests need the whole page (and, for recoveries, the successes too).
        paged = self.incidents or digest_threshold is not None
        statuses = [RunStatus.FAILURE, RunStatus.SUCCESS] if self.incidents else RunStatus.FAILURE
        fn = self._post_page if paged else self._post
        super().__init__(fn, statuses, page_fn=paged, **sensor_options)

    def build_message(self, context: RunStatusSensorContext) -> dict[str, Any]:
        """The `chat.postMessage` arguments for this run (never the token): what `_post` sends and
        what `runsense sensor preview` prints."""
        run = context.dagster_run
        text = self.text_fn(context)  # type: ignore[arg-type]
        if self.blocks_fn is not None:
            blocks = [_cut_section(block) for block in self.blocks_fn(context)]  # type: ignore[arg-type]
        else:
            blocks = [
                _section(f'*Job "{run.job_name}" failed. `{run.run_id.split("-")[0]}`*'),
                _section(cut(text)),
            ]
        if self.webserver_base_url:
            blocks.append(
                {
                    "type": "actions",
                    "elements": [
                        {
                            "type": "button",
                            "text": {"type": "plain_text", "text": "View run"},
                            "url": f"{self.webserver_base_url}/runs/{run.run_id}",
                        }
                    ],
                }
            )
        return {"channel": self.channel, "text": cut(text, TEXT_LIMIT), "blocks": blocks}

    def preview_message(self, context: RunStatusSensorContext) -> dict[str, Any]:
        """`build_message` for `runsense sensor preview`: a failing `text_fn` or `blocks_fn`
        comes back as one RuntimeError line without the token, as it would from a post."""
        try:
            return self.build_message(context)
        except Exception as exc:
            token = (
                os.environ.get(self._token.name) if isinstance(self._token, EnvVar) else self._token
            )
            raise RuntimeError(secrets.redact(describe(exc), [token])) from None

    def _post(self, context: RunStatusSensorContext) -> SkipReason | None:
        if context.dagster_run.will_retry and not self.include_retries:
            return SkipReason("this run will be retried: no alert until its last try")
        token = (
            self._token.get("the Slack token") if isinstance(self._token, EnvVar) else self._token
        )
        self._guarded(
            token, lambda: self._send(token, "chat.postMessage", self.build_message(context))
        )
        return None

    def _post_page(self, page: SensorPage) -> None:
        """Threads, recoveries and digests (see `slack_threads`), one Web API call at a time; in
        a preview, the calls are recorded instead (threads not yet posted have ts "pending")."""
        if page.preview:

            def record(method: str, arguments: dict[str, Any]) -> dict[str, Any]:
                page.would_send({"method": method, **arguments})
                return {"ok": True, "channel": arguments.get("channel"), "ts": "pending"}

            slack_threads.post_page(self, page, record)
            return
        token = (
            self._token.get("the Slack token") if isinstance(self._token, EnvVar) else self._token
        )
        client = slack_client(
            token, self.timeout_seconds, self.http_retries, self.http_backoff_seconds
        )

        def call(method: str, arguments: dict[str, Any]) -> dict[str, Any]:
            return self._guarded(token, lambda: self._send(token, method, arguments, client))

        slack_threads.post_page(self, page, call)

    def _guarded(self, token: str, send: Callable[[], Any]) -> Any:
        """`send()`, with the token redacted from anything it raises."""
        try:
            return send()
        except PermanentReactionError as exc:
            if secrets.contains(str(exc), [token]):
                raise PermanentReactionError(secrets.redact(str(exc), [token])) from None
            raise
        except Exception as exc:
            story = "".join(traceback.format_exception(exc))
            if not secrets.contains(story, [token]):
                raise
            # The token in any spelling: http.client quoting a CR/LF token, a text_fn line that
            # spells it out, a proxy echoing it. Keep the story, not the token.
            raise RuntimeError(secrets.redact(story, [token])) from None

    def _send(
        self, token: str, method: str, message: dict[str, Any], client: Any = None
    ) -> dict[str, Any]:
        from http.client import HTTPException

        from slack_sdk.errors import SlackApiError

        client = client or slack_client(
            token, self.timeout_seconds, self.http_retries, self.http_backoff_seconds
        )
        try:
            return dict(client.api_call(method, json=message).data)
        except SlackApiError as exc:
            # Redacted before the cut: a cut token would leave a prefix no search finds.
            code = secrets.redact(str(exc.response.get("error") or "unknown_error"), [token])
            code = cut(code, 200)
            if code in PERMANENT_SLACK_ERRORS:
                raise PermanentReactionError(
                    f"Slack refused the message to {self.channel}: {code}"
                ) from None
            raise RuntimeError(
                f"Slack answered HTTP {exc.response.status_code} {code} for {self.channel}"
            ) from None
        except (OSError, HTTPException) as exc:
            detail = secrets.redact(describe(exc), [token])
            raise RuntimeError(
                f"could not reach Slack after {self.http_retries + 1} tries: {detail}"
            ) from None

    def __repr__(self) -> str:
        return f"<slack failure sensor {self.name} → {self.channel}>"


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def _cut_section(block: dict[str, Any]) -> dict[str, Any]:
    """Cut a `blocks_fn` section's text to Slack's limit; other blocks pass through."""
    text = block.get("text")
    if (
        block.get("type") == "section"
        and isinstance(text, dict)
        and isinstance(text.get("text"), str)
    ):
        return {**block, "text": {**text, "text": cut(text["text"])}}
    return block


def make_slack_on_run_failure_sensor(
    channel: str,
    slack_token: Token,
    text_fn: TextFn | None = None,
    blocks_fn: BlocksFn | None = None,
    name: str | None = None,
    minimum_interval_seconds: float | None = None,
    monitored_jobs: Sequence[JobDefinition | str] | None = None,
    monitor_all_code_locations: bool = False,
    default_status: DefaultSensorStatus = DefaultSensorStatus.STOPPED,
    webserver_base_url: str | None = None,
    *,
    max_retries: int = 5,
    retry_delay_seconds: float = 5.0,
    timeout_seconds: float = 10.0,
    http_retries: int = 2,
    http_backoff_seconds: float = 0.5,
    incidents: bool = False,
    include_retries: bool = False,
    digest_threshold: int | None = None,
    monitored_tags: dict[str, str] | None = None,
) -> SlackRunFailureSensorDefinition:
    """A failure sensor that posts each failed run to `channel` (Dagster's signature).

    `slack_token` is the token or `EnvVar("NAME")`, read at each post. Within one post slack_sdk
    retries rate limits, 5xx answers and connection errors `http_retries` times (each HTTP call
    waits at most `timeout_seconds`); if the post still fails, the sensor retries the reaction
    `max_retries` times with back-off from `retry_delay_seconds`. Slack errors no retry can fix
    (`invalid_auth`, `channel_not_found`, `not_in_channel`, `msg_too_long`, ...) park it at once.
    A missing `EnvVar` is a failed reaction that names the variable and is retried (see `EnvVar`).
    A post that timed out may still have reached Slack, so an alert can, rarely, arrive twice.

    `incidents=True`: the first failure of an incident posts, later ones reply in its thread,
    the recovery replies and edits the first message. `include_retries=False`: failures that
    will be retried post nothing. `digest_threshold=N`: more than N failures in one tick make
    one digest message. `monitored_tags` keeps only runs carrying all those tags.
    """
    return SlackRunFailureSensorDefinition(
        channel,
        slack_token,
        text_fn=text_fn,
        blocks_fn=blocks_fn,
        webserver_base_url=webserver_base_url,
        timeout_seconds=timeout_seconds,
        http_retries=http_retries,
        http_backoff_seconds=http_backoff_seconds,
        name=name or "slack_on_run_failure",
        minimum_interval_seconds=minimum_interval_seconds,
        monitored_jobs=monitored_jobs,
        monitor_all_code_locations=monitor_all_code_locations,
        default_status=default_status,
        max_retries=max_retries,
        retry_delay_seconds=retry_delay_seconds,
        incidents=incidents,
        include_retries=include_retries,
        digest_threshold=digest_threshold,
        monitored_tags=monitored_tags,
    )
