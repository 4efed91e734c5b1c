"""A local HTTP server speaking enough of Slack's Web API for the real slack_sdk client.

It answers `chat.postMessage` (with a unique `ts` per message, and `thread_ts` for replies),
`chat.update` (of a message it accepted) and `auth.test` (JSON or form bodies, as slack_sdk sends them),
checks the bearer token, records every request, and can be scripted to answer the next requests
with a rate limit (429 + Retry-After), a server error, a stall past the client's timeout, or a
Slack error code. Only what Slack accepted counts as posted.
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

TOKEN = "xoxb-test-4f1c9e2a-secret-token"

RATE_LIMITED, SERVER_ERROR, STALL = "429", "500", "stall"


@dataclass
class Request:
    method: str
    body: dict[str, Any]
    answer: str  # "ok", one of the scripted actions, or the Slack error code returned
    at: float  # time.monotonic() when it arrived


class FakeSlack:
    """Use as a context manager; `url` is the base URL to give slack_sdk (it ends with '/')."""

    def __init__(
        self, token: str = TOKEN, retry_after: int = 1, stall_seconds: float = 1.0
    ) -> None:
        self.token = token
        self.retry_after = retry_after
        self.stall_seconds = stall_seconds
        self.requests: list[Request] = []
        self._scripts: dict[str | None, deque[str]] = defaultdict(deque)
        self._lock = threading.Lock()
        self._ts: list[str] = []  # of accepted messages, in order
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/api/"

    def script(self, action: str, times: int = 1, channel: str | None = None) -> None:
        """Answer the next `times` requests (to `channel` only, if given) with `action`: "429",
        "500", "stall", or a Slack error code such as "channel_not_found"."""
        with self._lock:
            self._scripts[channel].extend([action] * times)

    def posts(self) -> list[dict[str, Any]]:
        """The bodies of the messages Slack accepted, in order."""
        return [
            r.body for r in self.requests if r.method == "chat.postMessage" and r.answer == "ok"
        ]

    def top_level(self) -> list[dict[str, Any]]:
        """Accepted messages that started a conversation (not thread replies)."""
        return [p for p in self.posts() if not p.get("thread_ts")]

    def replies(self, ts: str) -> list[dict[str, Any]]:
        """Accepted replies in the thread of the message `ts`."""
        return [p for p in self.posts() if p.get("thread_ts") == ts]

    def updates(self) -> list[dict[str, Any]]:
        """The bodies of accepted `chat.update` calls, in order."""
        return [r.body for r in self.requests if r.method == "chat.update" and r.answer == "ok"]

    def ts_of(self, index: int) -> str:
        """The `ts` Slack gave the `index`-th accepted message."""
        return self._ts[index]

    def answers(self) -> list[str]:
        return [r.answer for r in self.requests]

    def _decide(self, method: str, body: dict[str, Any], authorization: str | None) -> str:
        with self._lock:
            queue = self._scripts.get(body.get("channel")) or self._scripts[None]
            action = queue.popleft() if queue else "ok"
            if action == "ok" and authorization is None:
                action = "not_authed"
            elif action == "ok" and authorization != f"Bearer {self.token}":
                action = "invalid_auth"
            self.requests.append(Request(method, body, action, time.monotonic()))
            return action

    def __enter__(self) -> FakeSlack:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def _handler(fake: FakeSlack) -> type[BaseHTTPRequestHandler]:
    class SlackHandler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # keep test output clean
            pass

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
            if "json" in (self.headers.get("Content-Type") or ""):
                body = json.loads(raw or "{}")
            else:
                body = {key: values[0] for key, values in parse_qs(raw).items()}
            method = self.path.rsplit("/", 1)[-1]
            action = fake._decide(method, body, self.headers.get("Authorization"))
            if action == RATE_LIMITED:
                headers = {"Retry-After": str(fake.retry_after)}
                self._reply(429, {"ok": False, "error": "ratelimited"}, headers)
            elif action == SERVER_ERROR:
                self._reply(500, {"ok": False, "error": "internal_error"})
            elif action == STALL:
                time.sleep(fake.stall_seconds)
                self._reply(200, {"ok": True})  # too late: the client has given up
            elif action != "ok":
                self._reply(200, {"ok": False, "error": action})
            elif method == "auth.test":
                self._reply(200, {"ok": True, "team": "runsense", "user": "bot"})
            elif method == "chat.postMessage":
                with fake._lock:
                    ts = f"{time.time():.6f}{len(fake._ts):04d}"
                    fake._ts.append(ts)
                self._reply(200, {"ok": True, "channel": body.get("channel"), "ts": ts})
            elif method == "chat.update":
                if body.get("ts") not in fake._ts:
                    fake.requests[-1].answer = "message_not_found"
                    self._reply(200, {"ok": False, "error": "message_not_found"})
                else:
                    self._reply(200, {"ok": True, "channel": body.get("channel"), "ts": body["ts"]})
            else:
                self._reply(200, {"ok": False, "error": "unknown_method"})

        def _reply(
            self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None
        ) -> None:
            data = json.dumps(payload).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up on a stalled answer

    return SlackHandler
