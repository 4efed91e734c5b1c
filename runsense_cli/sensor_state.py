"""A sensor's small durable state (`context.state`, `page.state`): JSON values by key, kept in the
database and written in the same transaction as the page of reactions that changed them.

So what a sensor remembers (the Slack thread of an incident, the last digest it sent) is exactly
as durable as its cursor: a crash before the commit forgets both, and the page is replayed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any


class SensorStateStore(MutableMapping[str, Any]):
    """A dict of JSON values. Reads see earlier writes of the same tick; writes reach the database
    with the page being committed. Keep it small: it is loaded whole once per tick."""

    def __init__(self, load: Callable[[], dict[str, Any]] | None = None) -> None:
        self._load = load
        self._values: dict[str, Any] | None = None if load else {}
        self._pending: dict[str, Any] = {}

    def _data(self) -> dict[str, Any]:
        if self._values is None:
            self._values = dict(self._load() if self._load else {})
        return self._values

    def __getitem__(self, key: str) -> Any:
        return self._data()[key]

    def __setitem__(self, key: str, value: Any) -> None:
        if not isinstance(key, str) or not key:
            raise TypeError("sensor state keys are non-empty strings")
        if value is None:
            raise TypeError("sensor state values cannot be None: delete the key instead")
        value = json.loads(json.dumps(value))  # JSON-able, and a copy: later mutations don't leak
        self._data()[key] = value
        self._pending[key] = value

    def __delitem__(self, key: str) -> None:
        del self._data()[key]
        self._pending[key] = None

    def __iter__(self) -> Iterator[str]:
        return iter(self._data())

    def __len__(self) -> int:
        return len(self._data())

    def take_writes(self) -> dict[str, Any]:
        """The writes since the last call (None = deleted), for the page commit."""
        writes, self._pending = self._pending, {}
        return writes

    def forget(self) -> None:
        """A page was not stored: drop what it wrote and read the database again next time."""
        self._pending = {}
        if self._load is not None:
            self._values = None

    def __repr__(self) -> str:
        return f"SensorStateStore({self._data()!r})"
