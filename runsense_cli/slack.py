"""Slack alerts on run failure, posted with the real slack_sdk client.

Only projects that use `make_slack_on_run_failure_sensor` import this module, so slack_sdk never
slows down other commands. Tokens live in memory only: never in reprs, errors, ticks or the
database.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from .definitions import JobDefinition
from .runs import RunStatus
from .sensors import (
    DefaultSensorStatus,
    PermanentReactionError,
    RunFailureSensorContext,
    RunStatusSensorContext,
    RunStatusSensorDefinition,
)

SECTION_LIMIT = 3000
TRUNCATION_MARKER = "… (truncated)"
BASE_URL_ENV = "RUNSENSE_SLACK_BASE_URL"
DEFAULT_BASE_URL = "https://slack.com/api/"

# Errors that no retry can fix: the reaction is parked at once with Slack's code.
PERMANENT_SLACK_ERRORS = frozenset(
    {
        "invalid_auth",
        "not_authed",
        "account_inactive",
        "token_revoked",
        "token_expired",
        "no_permission",
        "missing_scope",
        "channel_not_found",
        "not_in_channel",
        "is_archived",
        "msg_too_long",
        "invalid_blocks",
        "invalid_arguments",
    }
)


class EnvVar:
    """A token read from the environment when a message is posted, not when the module loads.

    A missing variable is an ordinary failed reaction, retried with back-off: set the variable
    and restart the daemon, and the waiting alerts go out on their next attempt.
    """

    def __init__(self, name: str) -> None:
        self.name = name

    def get(self) -> str:
        value = os.environ.get(self.name)
        if not value:
            raise RuntimeError(
                f"the Slack token is missing: set the environment variable {self.name}"
            )
        return value

    def __repr__(self) -> str:
        return f"EnvVar({self.name!r})"


Token = str | EnvVar


def slack_client(token: str, timeout: float = 10.0, retries: int = 3) -> Any:
    """A WebClient with slack_sdk's own retry handlers for rate limits, 5xx and lost connections."""
    from slack_sdk import WebClient
    from slack_sdk.http_retry.builtin_handlers import (
        ConnectionErrorRetryHandler,
        RateLimitErrorRetryHandler,
        ServerErrorRetryHandler,
    )
    from slack_sdk.http_retry.builtin_interval_calculators import BackoffRetryIntervalCalculator

    backoff = BackoffRetryIntervalCalculator(backoff_factor=0.5)
    base_url = os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
    if not base_url.endswith("/"):
        base_url += "/"
    return WebClient(
        token=token,
        base_url=base_url,
        timeout=int(max(1, timeout)),
        retry_handlers=[
            RateLimitErrorRetryHandler(max_retry_count=retries),  # sleeps for Retry-After
            ServerErrorRetryHandler(max_retry_count=retries, interval_calculator=backoff),
            ConnectionErrorRetryHandler(
                max_retry_count=retries,
                interval_calculator=backoff,
                error_types=[ConnectionError, TimeoutError, OSError],
            ),
        ],
    )


def cut(text: str, limit: int = SECTION_LIMIT) -> str:
    """Slack refuses section text over 3,000 characters; cut it with a visible marker."""
    if len(text) <= limit:
        return text
    return text[: limit - len(TRUNCATION_MARKER)] + TRUNCATION_MARKER


def default_text(context: RunFailureSensorContext) -> str:
    event = context.failure_event
    return f"Error: ```{event.message if event else 'unknown failure'}```"


class SlackRunFailureSensorDefinition(RunStatusSensorDefinition):
    """A failure sensor whose reaction is one `chat.postMessage`."""

    def __init__(
        self,
        channel: str,
        slack_token: Token,
        text_fn: Callable[[RunFailureSensorContext], str] | None = None,
        blocks_fn: Callable[[RunFailureSensorContext], list[dict[str, Any]]] | None = None,
        webserver_base_url: str | None = None,
        timeout: float = 10.0,
        retries: int = 3,
        **sensor_options: Any,
    ) -> None:
        if not isinstance(slack_token, (str, EnvVar)):
            raise TypeError("slack_token must be a string or EnvVar('NAME')")
        self.channel = channel
        self._token = slack_token
        self.text_fn = text_fn or default_text
        self.blocks_fn = blocks_fn
        self.webserver_base_url = webserver_base_url.rstrip("/") if webserver_base_url else None
        self.timeout = timeout
        self.retries = retries
        super().__init__(self._post, RunStatus.FAILURE, **sensor_options)

    def build_message(self, context: RunStatusSensorContext) -> dict[str, Any]:
        """The `chat.postMessage` arguments for this run, without the token."""
        run = context.dagster_run
        text = self.text_fn(context)  # type: ignore[arg-type]
        if self.blocks_fn is not None:
            blocks = list(self.blocks_fn(context))  # type: ignore[arg-type]
        else:
            blocks = [
                _section(f'*Job "{run.job_name}" failed. `{run.run_id.split("-")[0]}`*'),
                _section(text),
            ]
        blocks = [_cut_block(block) for block in blocks]
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
        return {"channel": self.channel, "text": text, "blocks": blocks}

    def _post(self, context: RunStatusSensorContext) -> None:
        from slack_sdk.errors import SlackApiError

        message = self.build_message(context)
        token = self._token.get() if isinstance(self._token, EnvVar) else self._token
        client = slack_client(token, self.timeout, self.retries)
        try:
            client.chat_postMessage(**message)
        except SlackApiError as exc:
            code = str(exc.response.get("error", "unknown_error"))
            status = exc.response.status_code
            if code in PERMANENT_SLACK_ERRORS:
                raise PermanentReactionError(
                    f"Slack refused the message to {self.channel}: {code}"
                ) from None
            raise RuntimeError(f"Slack answered {status} {code} for {self.channel}") from None
        except (OSError, TimeoutError) as exc:
            raise RuntimeError(
                f"could not reach Slack after {self.retries} retries: {type(exc).__name__}"
            ) from None

    def __repr__(self) -> str:
        return f"<slack failure sensor {self.name} → {self.channel}>"


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def _cut_block(block: dict[str, Any]) -> dict[str, Any]:
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
    text_fn: Callable[[RunFailureSensorContext], str] | None = None,
    blocks_fn: Callable[[RunFailureSensorContext], list[dict[str, Any]]] | None = None,
    name: str | None = None,
    minimum_interval_seconds: float | None = None,
    monitored_jobs: Sequence[JobDefinition | str] | None = None,
    monitor_all_code_locations: bool = False,
    default_status: DefaultSensorStatus = DefaultSensorStatus.STOPPED,
    webserver_base_url: str | None = None,
    max_retries: int = 5,
    retry_delay_seconds: float = 5.0,
) -> SlackRunFailureSensorDefinition:
    """A failure sensor that posts each failed run to `channel` (Dagster's signature)."""
    return SlackRunFailureSensorDefinition(
        channel,
        slack_token,
        text_fn=text_fn,
        blocks_fn=blocks_fn,
        webserver_base_url=webserver_base_url,
        name=name or "slack_on_run_failure",
        minimum_interval_seconds=minimum_interval_seconds,
        monitored_jobs=monitored_jobs,
        monitor_all_code_locations=monitor_all_code_locations,
        default_status=default_status,
        max_retries=max_retries,
        retry_delay_seconds=retry_delay_seconds,
    )
