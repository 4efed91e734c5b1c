"""The run tags that drive retries and overdue runs, read the same way by storage and daemon.

Pure functions over a run's tags (job tags are merged into every run's tags when it is created),
so the storage can decide a retry inside the transaction that writes the RUN_FAILURE.
"""

from __future__ import annotations

from collections.abc import Mapping

MAX_RETRIES = ("runsense/max_retries", "dagster/max_retries")
MAX_RUNTIME = ("runsense/max_runtime", "dagster/max_runtime")
MAX_QUEUE_TIME = ("runsense/max_queue_time", "dagster/max_queue_time")
MAX_RUNTIME_ACTION = "runsense/max_runtime_action"
RETRY_OF = "runsense/retry_of"
RETRY_NUMBER = "runsense/retry_number"
WILL_RETRY = "runsense/will_retry"

# Tags a retry does not inherit: they describe the failed run, not the work.
NOT_INHERITED = frozenset({WILL_RETRY, "runsense/run_key", "runsense/launched_by"})


def _number(tags: Mapping[str, str], names: tuple[str, ...]) -> float | None:
    """The first of `names` that holds a number; a malformed value counts as unset."""
    for name in names:
        value = tags.get(name)
        if value is None:
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            return None
        return number if number >= 0 else None
    return None


def max_retries(tags: Mapping[str, str]) -> int:
    number = _number(tags, MAX_RETRIES)
    return int(number) if number is not None else 0


def retry_number(tags: Mapping[str, str]) -> int:
    number = _number(tags, (RETRY_NUMBER,))
    return int(number) if number is not None else 0


def will_retry(tags: Mapping[str, str]) -> bool:
    """Whether a run with these tags that fails now gets another attempt."""
    return retry_number(tags) < max_retries(tags)


def retry_tags(tags: Mapping[str, str], failed_run_id: str) -> dict[str, str]:
    """The tags of the retry of a run that failed with `tags`."""
    kept = {k: v for k, v in tags.items() if k not in NOT_INHERITED}
    kept[RETRY_OF] = failed_run_id
    kept[RETRY_NUMBER] = str(retry_number(tags) + 1)
    kept["runsense/launched_by"] = "retry"
    return kept


def max_runtime(tags: Mapping[str, str]) -> float | None:
    return _number(tags, MAX_RUNTIME)


def max_queue_time(tags: Mapping[str, str]) -> float | None:
    return _number(tags, MAX_QUEUE_TIME)
