"""A local HTTP server that speaks enough of Slack's Web API for the real slack_sdk client.

It checks the bearer token, records every request, and can be scripted to answer the next
requests with a rate limit (429 + Retry-After), a server error, a stall past the client's timeout,
or a Slack error code.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

TOKEN = "xoxb-test-4f1c9e2a-secret-token"


class FakeSlack:
    def __init__(self, token: str = TOKEN) -> None:
        self.token = token
        self.requests: list[dict[str, Any]] = []
        self.script: deque[str] = deque()
        self.stall_seconds = 2.5
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode()
                if "json" in (self.headers.get("Content-Type") or ""):
                    body = json.loads(raw or "{}")
                else:
                    body = {k: v[0] for k, v in parse_qs(raw).items()}
                method = self.path.rsplit("/", 1)[-1]
                with fake._lock:
                    action = fake.script.popleft() if fake.script else "ok"
                    if (
                        action == "ok"
                        and self.headers.get("Authorization") != f"Bearer {fake.token}"
                    ):
                        action = "error:invalid_auth"
                    fake.requests.append({"method": method, "body": body, "answer": action})
                if action == "429":
                    self._reply(429, {"ok": False, "error": "ratelimited"}, {"Retry-After": "1"})
                elif action == "500":
                    self._reply(500, {"ok": False, "error": "internal_error"})
                elif action == "stall":
                    time.sleep(fake.stall_seconds)
                    self._reply(200, {"ok": True})
                elif action.startswith("error:"):
                    self._reply(200, {"ok": False, "error": action.split(":", 1)[1]})
                elif method == "auth.test":
                    self._reply(200, {"ok": True, "team": "runsense", "user": "bot"})
                else:
                    self._reply(
                        200, {"ok": True, "channel": body.get("channel"), "ts": str(time.time())}
                    )

            def _reply(
                self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None
            ) -> None:
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for key, value in (headers or {}).items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up on a stalled answer

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/api/"

    def posts(self) -> list[dict[str, Any]]:
        """Messages Slack accepted."""
        return [
            r["body"]
            for r in self.requests
            if r["method"] == "chat.postMessage" and r["answer"] == "ok"
        ]

    def __enter__(self) -> FakeSlack:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
