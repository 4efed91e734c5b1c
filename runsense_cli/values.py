"""Tags and run config as users and sensors hand them over, checked before anything is stored.

Both are stored and printed as JSON, so they must be JSON: tags a mapping of str to str, run
config plain JSON values (no dates, no NaN, nested at most `MAX_NESTING` levels). A value that is
not is refused with one line naming its path, rather than converted behind the user's back or
failing later inside storage with a traceback.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from .errors import ConfigError, RunsenseError
from .text import clean

MAX_NESTING = 100
MAX_INT64 = 2**63 - 1  # SQLite's INTEGER range: ids, limits and counts beyond it cannot be stored
RESERVED_TAG_PREFIX = "runsense/"
_SCALARS = (str, int, float, bool)


def check_tags(
    tags: Any, where: str = "tags", error: type[RunsenseError] = ConfigError
) -> dict[str, str]:
    """Tags as `dict[str, str]`: numbers and bools become their text, anything else is refused."""
    if tags is None:
        return {}
    if not isinstance(tags, Mapping):
        raise error(
            f"{where} must be a mapping of str to str, got {type(tags).__name__}",
            'e.g. {"team": "data"}',
        )
    checked = {}
    for key, value in tags.items():
        if not isinstance(key, _SCALARS) or not isinstance(value, _SCALARS):
            bad, what = (key, "key") if not isinstance(key, _SCALARS) else (value, "value")
            raise error(
                f"{where}[{_short(key, repr_str=True)}]: a tag {what} must be a str, got {_a(bad)}",
                "tags are text: str(...) or json.dumps(...) the value yourself",
            )
        checked[clean(str(key))] = clean(str(value))
    return checked


def check_json(value: Any, where: str = "run config") -> Any:
    """A JSON-safe copy of `value` (tuples become lists, text is cleaned); refuses the rest.

    `where` names the value in messages (`--config-json`, `sensor 's': RunRequest.run_config`),
    followed by the path inside it: `--config-json: ops.my_op.config.ratio: nan is not allowed`.
    """
    return _walk(value, where, (), 0)


# Every RunRequest's config is walked, in every tick: exact types are tested first, and the path
# to a value (a tuple of keys and indexes) is only spelled out for a message.
_PLAIN = (type(None), int, bool)


def _walk(value: Any, where: str, path: tuple[Any, ...], depth: int) -> Any:
    kind = type(value)
    if kind is str:
        return value if value.isascii() else clean(value)
    if kind in _PLAIN:
        return value
    if kind is dict or kind is list or isinstance(value, (Mapping, list, tuple)):
        if depth >= MAX_NESTING:
            raise ConfigError(
                f"{_at(where, _short(_spell(path), 60))}: nested more than {MAX_NESTING} levels"
                " deep",
                "flatten it",
            )
        if kind is dict or isinstance(value, Mapping):
            out = {}
            for key, item in value.items():
                if type(key) is not str:
                    if not isinstance(key, str):
                        raise ConfigError(
                            f"{_at(where, _spell(path))}: key {_short(key)} is {_a(key)}, not a"
                            " string",
                            "JSON object keys are strings",
                        )
                    key = str.__str__(key)  # its characters: an enum's __str__ is its name
                if not key.isascii():
                    key = clean(key)
                item_kind = type(item)
                if item_kind is str:
                    out[key] = item if item.isascii() else clean(item)
                elif item_kind in _PLAIN:
                    out[key] = item
                else:
                    out[key] = _walk(item, where, (*path, key), depth + 1)
            return out
        return [_walk(item, where, (*path, i), depth + 1) for i, item in enumerate(value)]
    if isinstance(value, str):  # a str subclass (an enum of str): its characters, as JSON has them
        return clean(str.__str__(value))
    if isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(
                f"{_at(where, _spell(path))}: {value} is not allowed (JSON has no NaN or Infinity)",
                "use null, a string, or a finite number",
            )
        return value
    hint = (
        f'quote it: "{value.isoformat()}"'
        if hasattr(value, "isoformat")
        else "use str, int, float, bool, list, dict or null"
    )
    raise ConfigError(f"{_at(where, _spell(path))}: {_a(value)} is not a JSON value", hint)


def _spell(path: tuple[Any, ...]) -> str:
    """`("ops", "my_op", "items", 2)` → `ops.my_op.items[2]`."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text


def chain_depth(tags: Mapping[str, str]) -> int:
    """The stored `runsense/depth` tag, read so that a garbage value never crashes a tick: text
    that is not a number counts as 0, a number too long to parse as past any limit."""
    text = str(tags.get(f"{RESERVED_TAG_PREFIX}depth") or "0").strip()
    if not (text.isascii() and text.isdigit()):
        return 0
    return int(text) if len(text) <= 18 else MAX_INT64


def skip_text(skip: Any, sensor_name: str) -> str | None:
    """A `SkipReason`'s message, which must be text: `SkipReason(404)` is refused, as Dagster
    does, rather than stored as a number that every later reader would have to survive."""
    message = skip.skip_message
    if message is not None and not isinstance(message, str):
        raise RunsenseError(
            f"sensor '{sensor_name}' returned SkipReason({short_repr(message)}): "
            f"skip_message must be a str, got {type(message).__name__}",
            "return SkipReason(str(...)) or an f-string",
        )
    return message


def short_repr(value: Any, limit: int = 80) -> str:
    """`repr(value)` cut to `limit` characters, cleaned; never raises."""
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__name__} object>"
    return clean(text if len(text) <= limit else text[: limit - 3] + "...")


def _at(where: str, path: str) -> str:
    return f"{where}: {path}" if path else where


def _a(value: Any) -> str:
    name = type(value).__name__
    return f"an {name}" if name[0] in "aeiou" else f"a {name}"


def _short(value: Any, limit: int = 40, repr_str: bool = False) -> str:
    text = clean(value if isinstance(value, str) and not repr_str else repr(value))
    return text if len(text) <= limit else text[: limit - 1] + "…"
