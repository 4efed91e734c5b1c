"""Keeping secrets (tokens, passwords) out of every message runsense stores or prints.

A secret leaks in more spellings than its own: http.client refuses a header holding CR/LF by
quoting it as bytes (`b'Bearer xoxb-1\\r\\n2'`), a URL carries it percent-encoded, a JSON body
escaped, a traceback `repr`-escaped, and a message cut to a length keeps a prefix of it, at the
end or, once embedded in a longer message, anywhere. So `redact` replaces every spelling, and any
run of 8 or more of a spelling's first characters, wherever it occurs. Redact before cutting.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

from .errors import DefinitionError

PLACEHOLDER = "<redacted>"
MIN_PREFIX = 8  # a shorter prefix says too little about the secret to be worth hiding


def spellings(secret: str) -> set[str]:
    """The forms `secret` can take inside a message, itself included."""
    raw = secret.encode("utf-8", "surrogateescape")
    forms = {
        secret,
        repr(secret)[1:-1],  # a str repr: \r\n escaped
        repr(raw)[2:-1],  # a bytes repr, as http.client quotes a bad header value
        secret.encode("unicode_escape").decode("ascii"),
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
        quote(secret),
        quote(secret, safe=""),
        quote_plus(secret),
        secret.replace("\\", "\\\\").replace('"', '\\"'),  # an HTTP quoted-string
    }
    # Either quote escaped (repr picks the quote character by content), then repr'd once more
    # (the repr of a message that already held a repr).
    forms |= {f.replace("'", "\\'") for f in forms} | {f.replace('"', '\\"') for f in forms}
    forms |= {repr(f)[1:-1] for f in forms}
    # Each line of a secret holding CR/LF may travel alone (a header split at the line break).
    forms |= {piece for piece in re.split(r"[\r\n]+", secret) if len(piece) >= MIN_PREFIX}
    forms.discard("")
    return forms


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """`text` with each spelling of each secret, or any prefix of 8+ characters, replaced."""
    forms = {form for secret in secrets if secret for form in spellings(secret)}
    if not forms or not text:
        return text
    by_head: dict[str, list[str]] = {}
    for form in forms:
        by_head.setdefault(form[:MIN_PREFIX], []).append(form)
    spans = []
    for head, group in by_head.items():
        start = text.find(head)
        while start != -1:
            spans.append((start, start + max(_matching(text, start, form) for form in group)))
            start = text.find(head, start + 1)
    merged: list[list[int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    out, done = [], 0
    for start, end in merged:
        out += [text[done:start], PLACEHOLDER]
        done = end
    out.append(text[done:])
    return "".join(out)


def contains(text: str, secrets: Iterable[str | None]) -> bool:
    """Whether `redact` would change `text`."""
    return redact(text, secrets) != text


def _matching(text: str, start: int, form: str) -> int:
    """How many characters of `form` match `text` from `start` (the head already does)."""
    length = min(MIN_PREFIX, len(form))
    while (
        length < len(form) and start + length < len(text) and text[start + length] == form[length]
    ):
        length += 1
    return length


class EnvVar:
    """A secret (a Slack token, an SMTP password) read from the environment at each use, so it is
    never in the project code.

    A missing variable makes an ordinary failed reaction, retried with the sensor's back-off
    rather than parked: the fix (set the variable, restart the daemon or run `sensor tick` again)
    then sends the waiting alerts on their next attempt without a `sensor retry`.
    """

    def __init__(self, name: str) -> None:
        if not isinstance(name, str) or not name:
            raise DefinitionError(f"EnvVar needs a variable name, got {name!r}")
        self.name = name

    def get(self, what: str = "the secret") -> str:
        """The value; `what` names the secret in the error when the variable is unset."""
        value = os.environ.get(self.name)
        if not value:
            raise RuntimeError(f"{what} is missing: set the environment variable {self.name}")
        return value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, EnvVar) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)

    def __repr__(self) -> str:
        return f"EnvVar({self.name!r})"
