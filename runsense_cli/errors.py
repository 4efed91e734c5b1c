"""The one exception type the CLI turns into a single line for the user."""

from __future__ import annotations

from collections.abc import Iterable

from .text import safe_str


class RunsenseError(Exception):
    """A problem the user can fix: `message` says what is wrong, `hint` how to fix it.

    `exit_code` follows SPEC §7: 2 for bad usage, project, config or database; 1 for a run or
    reaction that failed.
    """

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class DefinitionError(RunsenseError):
    """Raised while user code builds jobs, ops or sensors that cannot work."""


class ConfigError(RunsenseError):
    """Run config that does not match the ops' config schemas."""


class ProjectError(RunsenseError):
    """The user's project cannot be found or loaded."""


class StorageError(RunsenseError):
    """The database cannot be used: corrupt, newer than the code, or locked for too long."""


class SensorBusyError(RunsenseError):
    """Another process holds the sensor's tick lease."""


def describe(exc: BaseException) -> str:
    """`ValueError: boom`, or just the class name when the exception has no message; never
    raises, and never holds invalid UTF-8, whatever the exception's `__str__` does."""
    message = safe_str(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


class DamagedRowError(StorageError):
    """A stored row decodes to nothing runsense knows (a status no version wrote, say)."""

    def located(self, where: str) -> DamagedRowError:
        """The same error naming the database (the decoders do not know where they read)."""
        return DamagedRowError(
            self.message.replace("the database", f"the database {where}", 1), self.hint
        )


class LeaseLostError(RunsenseError):
    """A tick's lease was taken by another process: its page must not be stored."""


class StorageUnavailableError(StorageError):
    """The database server cannot be reached (after retrying for a while)."""


def suggest(name: str, known: Iterable[str], command: str | None = None) -> str | None:
    """`did you mean 'x'?` for a close match among `known`, else where to look them up."""
    import difflib

    close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.5)
    if close:
        return "did you mean " + " or ".join(f"'{c}'" for c in close) + "?"
    return f"`{command}` lists them" if command else None
