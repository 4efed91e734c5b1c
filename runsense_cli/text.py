"""Text from user code made safe to store and print: valid UTF-8, and a str whatever happens.

Python hands invalid UTF-8 (a file name from `os.listdir`, bytes decoded with
`surrogateescape`) around as lone surrogates; SQLite, a UTF-8 terminal and strict JSON parsers
all refuse them. Every piece of user text is cleaned here once, where it enters storage, so
nothing later has to care.
"""

from __future__ import annotations

import re

REPLACEMENT = "\ufffd"
_SURROGATES = re.compile("[\ud800-\udfff]")


def clean(text: str) -> str:
    """`text` with invalid UTF-8 shown as U+FFFD; the same object when it is already valid."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:
        # Bytes smuggled in by surrogateescape: decode them as UTF-8 would have, with U+FFFD.
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:  # other lone surrogates, e.g. half of an emoji's UTF-16 pair
        return _SURROGATES.sub(REPLACEMENT, text)


def safe_str(value: object) -> str:
    """`str(value)`, cleaned; an object whose `__str__` raises still gets a name, not a crash."""
    try:
        text = value if isinstance(value, str) else str(value)
    except Exception:
        text = f"<{type(value).__name__} object: str() failed>"
    return clean(text)
