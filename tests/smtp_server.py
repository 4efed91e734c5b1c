"""A local SMTP server speaking enough of RFC 5321 for smtplib: EHLO/HELO, AUTH PLAIN and LOGIN,
MAIL, RCPT, DATA, RSET, NOOP, QUIT, and STARTTLS or implicit TLS when given a certificate.

It checks the login, records every accepted message with its envelope, and, like real servers,
echoes what it was sent in its 535 reply (the user, the password and the base64 blob), so tests
can prove runsense redacts it. `start(listen=False)` binds the port without listening: connections
are refused ("server down") until `listen()`.
"""

from __future__ import annotations

import base64
import socketserver
import ssl
import subprocess
import threading
from collections import deque
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

USER = "alerts@example.com"
PASSWORD = "smtp-Pa55word-7c1e9f-secret"


@dataclass
class Delivered:
    mail_from: str
    rcpt_to: list[str]
    message: EmailMessage


@dataclass
class FakeSMTP:
    user: str = USER
    password: str = PASSWORD
    refuse: set[str] = field(default_factory=set)  # recipients answered 550
    tls: ssl.SSLContext | None = None  # offer STARTTLS with it, or wrap at connect if implicit
    implicit_tls: bool = False
    messages: list[Delivered] = field(default_factory=list)
    transcript: list[str] = field(default_factory=list)  # commands received (AUTH blobs included)
    logins: list[tuple[str, bool]] = field(default_factory=list)  # (user, accepted)
    connections: int = 0

    def __post_init__(self) -> None:
        self._scripts: deque[tuple[str, str]] = deque()
        self._lock = threading.Lock()
        self.server: socketserver.ThreadingTCPServer | None = None
        self._listening = False

    def script(self, verb: str, reply: str) -> None:
        """Answer the next `verb` command (e.g. "RCPT", "MAIL") with `reply` (e.g. "451 later")."""
        with self._lock:
            self._scripts.append((verb.upper(), reply))

    def scripted(self, verb: str) -> str | None:
        with self._lock:
            for i, (v, reply) in enumerate(self._scripts):
                if v == verb:
                    del self._scripts[i]
                    return reply
        return None

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.server_address[1]

    def start(self, listen: bool = True) -> FakeSMTP:
        fake = self

        class Handler(_Session):
            server_state = fake

        self.server = socketserver.ThreadingTCPServer(
            ("127.0.0.1", 0), Handler, bind_and_activate=False
        )
        self.server.daemon_threads = True
        self.server.allow_reuse_address = True
        self.server.server_bind()
        if listen:
            self.listen()
        return self

    def listen(self) -> None:
        assert self.server is not None
        self.server.server_activate()
        self._listening = True
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        ).start()

    def stop(self) -> None:
        if self.server is not None:
            if self._listening:
                self.server.shutdown()  # blocks forever unless serve_forever runs
            self.server.server_close()

    def __enter__(self) -> FakeSMTP:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Session(socketserver.StreamRequestHandler):
    server_state: FakeSMTP
    timeout = 10

    def setup(self) -> None:
        fake = self.server_state
        fake.connections += 1
        if fake.implicit_tls and fake.tls is not None:
            self.request = fake.tls.wrap_socket(self.request, server_side=True)
        super().setup()

    def send(self, line: str) -> None:
        self.wfile.write(line.encode() + b"\r\n")
        self.wfile.flush()

    def read(self) -> str:
        return self.rfile.readline().decode("utf-8", "replace").rstrip("\r\n")

    def handle(self) -> None:
        fake = self.server_state
        authed, mail_from, rcpts = False, "", []
        self.send("220 localhost fake SMTP ready")
        while True:
            line = self.read()
            if not line:
                return
            fake.transcript.append(line)
            verb = line.split(" ", 1)[0].upper()
            scripted = fake.scripted(verb)
            if scripted:
                self.send(scripted)
                continue
            if verb in ("EHLO", "HELO"):
                tls_offer = fake.tls is not None and not fake.implicit_tls
                tls_offer = tls_offer and not isinstance(self.request, ssl.SSLSocket)
                extras = ["STARTTLS"] if tls_offer else []
                lines = ["localhost", *extras, "AUTH PLAIN LOGIN"]
                for text in lines[:-1]:
                    self.send(f"250-{text}")
                self.send(f"250 {lines[-1]}")
            elif verb == "STARTTLS" and fake.tls is not None:
                self.send("220 ready to start TLS")
                self.request = fake.tls.wrap_socket(self.request, server_side=True)
                self.rfile = self.request.makefile("rb")
                self.wfile = self.request.makefile("wb")
            elif verb == "AUTH":
                authed = self.auth(line)
            elif verb == "MAIL":
                if not authed:
                    self.send("530 5.7.0 Authentication required")
                    continue
                mail_from, rcpts = _address(line), []
                self.send("250 OK")
            elif verb == "RCPT":
                address = _address(line)
                if address in fake.refuse:
                    self.send(f"550 5.1.1 <{address}>: Recipient address rejected")
                else:
                    rcpts.append(address)
                    self.send("250 OK")
            elif verb == "DATA":
                self.send("354 End data with <CR><LF>.<CR><LF>")
                data = []
                while (chunk := self.rfile.readline()) not in (b".\r\n", b""):
                    data.append(chunk[1:] if chunk.startswith(b"..") else chunk)
                message = message_from_bytes(b"".join(data), policy=policy.default)
                fake.messages.append(Delivered(mail_from, rcpts, message))  # type: ignore[arg-type]
                self.send("250 OK queued")
            elif verb in ("RSET", "NOOP"):
                self.send("250 OK")
            elif verb == "QUIT":
                self.send("221 bye")
                return
            else:
                self.send("502 5.5.2 command not recognized")

    def auth(self, line: str) -> bool:
        fake = self.server_state
        parts = line.split()
        mechanism = parts[1].upper() if len(parts) > 1 else ""
        if mechanism == "PLAIN":
            blob = parts[2] if len(parts) > 2 else self.ask("")
            _, user, password = base64.b64decode(blob).decode().split("\0")
        elif mechanism == "LOGIN":
            first = parts[2] if len(parts) > 2 else self.ask("VXNlcm5hbWU6")
            user = base64.b64decode(first).decode()
            blob = self.ask("UGFzc3dvcmQ6")
            password = base64.b64decode(blob).decode()
        else:
            self.send("504 5.5.4 unrecognized authentication type")
            return False
        ok = (user, password) == (fake.user, fake.password)
        fake.logins.append((user, ok))
        if ok:
            self.send("235 2.7.0 Authentication successful")
        else:  # echo what was sent, as careless servers do
            self.send(f"535 5.7.8 Authentication failed for {user} with {password} ({blob})")
        return ok

    def ask(self, challenge: str) -> str:
        self.send(f"334 {challenge}")
        answer = self.read()
        self.server_state.transcript.append(answer)
        return answer


def _address(line: str) -> str:
    return line.split(":", 1)[1].strip().split()[0].strip("<>")


def self_signed(directory: Path) -> tuple[Path, Path] | None:
    """A throwaway certificate for `localhost` (cert, key), made with the openssl command, or
    None when it is not installed."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    try:
        subprocess.run(
            [
                *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
                *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost"),
                *("-addext", "subjectAltName=DNS:localhost"),
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return cert, key


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context
