"""Slack alerts people can live with (SPEC §11): one thread per incident, a recovery that edits the
first message, and one digest instead of a storm. Built on the public page-sensor mechanism
(`SensorPage`, `page.state`), exactly as a user's sensor for another service would be.

The thread of an incident lives in the sensor's durable state under `incident:<id>`
(`{"channel", "ts", "digest"}`), committed with the page, so a restarted daemon keeps threading.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .page_sensors import SensorPage
from .runs import EventType
from .sensors import SkipReason

if TYPE_CHECKING:
    from .sensor_context import RunStatusSensorContext

DIGEST_LINES = 20
SECTION_LIMIT = 3000  # characters Slack takes in a section
DIGEST_SECTIONS = 40  # sections of the digest's body at most (Slack takes 50 blocks a message)
Call = Callable[[str, dict[str, Any]], dict[str, Any]]  # (Web API method, arguments) -> answer


def thread_key(incident_id: int) -> str:
    return f"incident:{incident_id}"


def span(seconds: float) -> str:
    seconds = int(max(0, seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60}s"
    return f"{seconds // 3600}h {seconds % 3600 // 60}m"


def plan_page(
    sensor: Any, page: SensorPage
) -> list[tuple[RunStatusSensorContext | None, str, dict]]:
    """What the page would send, in order, as (context, method, arguments); the contexts not
    listed get their results set here (skips). `ts` of threads not yet known is "pending"."""
    sends: list[tuple[Any, str, dict]] = []
    failures = [c for c in page if _type(c) == EventType.RUN_FAILURE]
    postable = []
    for context in failures:
        if context.dagster_run.will_retry and not sensor.include_retries:
            page.set_result(
                context, SkipReason("this run will be retried: no alert until its last try")
            )
        else:
            postable.append(context)
    threshold = sensor.digest_threshold
    if threshold is not None and len(postable) > threshold:
        sends.append((None, "digest", digest_message(sensor.channel, postable)))
    else:
        sends += [(c, "failure", {}) for c in postable]
    for context in page:
        if _type(context) != EventType.RUN_SUCCESS:
            continue
        incident = context.incident
        if not sensor.incidents or incident is None or not incident.resolved_by_this_run:
            page.set_result(context, SkipReason("no incident of this job was open"))
        else:
            sends.append((context, "recovery", {}))
    return sends


def post_page(sensor: Any, page: SensorPage, call: Call) -> None:
    """Send the page's messages with `call`; each run's reaction records how its message went."""
    for context, kind, message in plan_page(sensor, page):
        if kind == "digest":
            answer = call("chat.postMessage", message)
            for c in _in_digest(page):
                incident = c.incident if sensor.incidents else None
                if incident is not None and thread_key(incident.incident_id) not in page.state:
                    page.state[thread_key(incident.incident_id)] = {
                        "channel": answer.get("channel") or sensor.channel,
                        "ts": answer.get("ts"),
                        "digest": True,
                    }
            continue
        try:
            if kind == "failure":
                _post_failure(sensor, page, context, call)
            else:
                _post_recovery(sensor, page, context, call)
        except Exception as exc:
            page.set_result(context, exc)


def _in_digest(page: SensorPage) -> list[Any]:
    return [
        c
        for c in page
        if _type(c) == EventType.RUN_FAILURE and not isinstance(page.result_for(c), SkipReason)
    ]


def _post_failure(sensor: Any, page: SensorPage, context: Any, call: Call) -> None:
    message = sensor.build_message(context)
    incident = context.incident if sensor.incidents else None
    thread = page.state.get(thread_key(incident.incident_id)) if incident else None
    if thread is not None:
        run = context.dagster_run
        call(
            "chat.postMessage",
            {
                "channel": thread["channel"],
                "thread_ts": thread["ts"],
                "text": f'Job "{run.job_name}" failed again: {incident.failure_count} failures in a'
                f" row (run `{run.run_id.split('-')[0]}`). {message['text']}"[:3000],
            },
        )
        return
    answer = call("chat.postMessage", message)
    if incident is not None:
        page.state[thread_key(incident.incident_id)] = {
            "channel": answer.get("channel") or sensor.channel,
            "ts": answer.get("ts"),
            "digest": False,
        }


def _post_recovery(sensor: Any, page: SensorPage, context: Any, call: Call) -> None:
    incident = context.incident
    key = thread_key(incident.incident_id)
    thread = page.state.get(key)
    if thread is None:
        page.set_result(context, SkipReason("the incident's first message was never posted"))
        return
    run = context.dagster_run
    took = span((incident.resolved_at or 0) - incident.opened_at)
    text = (
        f'Resolved: job "{run.job_name}" recovered after {incident.failure_count} failure(s)'
        f" in {took} (run `{run.run_id.split('-')[0]}` succeeded)."
    )
    call(
        "chat.postMessage", {"channel": thread["channel"], "thread_ts": thread["ts"], "text": text}
    )
    if not thread.get("digest"):
        call(
            "chat.update",
            {
                "channel": thread["channel"],
                "ts": thread["ts"],
                "text": text,
                "blocks": [
                    {
                        "type": "section",
                        "text": {"type": "mrkdwn", "text": f'~Job "{run.job_name}" failed~ {text}'},
                    }
                ],
            },
        )
    del page.state[key]


def digest_message(channel: str, failures: list[Any]) -> dict[str, Any]:
    """One message for many failures: per job the count, the first error and the run ids."""
    by_job: dict[str, list[Any]] = {}
    for context in failures:
        by_job.setdefault(context.dagster_run.job_name, []).append(context)
    lines = []
    for job_name, contexts in by_job.items():
        event = contexts[0].dagster_event
        error = (event.message if event and event.message else "unknown failure").splitlines()[0]
        ids = ", ".join(c.dagster_run.run_id.split("-")[0] for c in contexts)
        lines.append(
            f'• job "{job_name}": {len(contexts)} failure(s). First error: {error[:300]}. Runs: {ids}'
        )
    shown = lines[:DIGEST_LINES]
    if len(lines) > DIGEST_LINES:
        shown.append(f"+{len(lines) - DIGEST_LINES} more")
    title = f"*{len(failures)} runs failed* across {len(by_job)} job(s)"
    body = "\n".join(shown)
    return {
        "channel": channel,
        "text": f"{title}\n{body}"[:40000],
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": title}},
            *({"type": "section", "text": {"type": "mrkdwn", "text": p}} for p in _sections(body)),
        ],
    }


def _sections(body: str) -> list[str]:
    """`body` in sections Slack accepts, broken after a line or a run id: Slack shows a message's
    blocks (its `text` is only the notification), so one cut section would hide runs and jobs."""
    pieces: list[str] = []
    while body and len(pieces) < DIGEST_SECTIONS:
        if len(body) <= SECTION_LIMIT:
            pieces.append(body)
            body = ""
            break
        end = max(body.rfind("\n", 0, SECTION_LIMIT), body.rfind(", ", 0, SECTION_LIMIT - 1) + 1)
        end = end if end > 0 else SECTION_LIMIT
        pieces.append(body[:end].rstrip())
        body = body[end:].lstrip("\n ")
    if body:
        marker = "… (truncated)"
        pieces[-1] = pieces[-1][: SECTION_LIMIT - len(marker)] + marker
    return pieces


def _type(context: Any) -> EventType | None:
    event = context.dagster_event
    return event.event_type if event is not None else None
