"""Options shared by every command, resolved once, with the project and storage opened lazily.

Commands validate their input before asking for `storage`, so bad input never creates or
changes a database.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..home import resolve_home

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..definitions import Definitions
    from ..evaluation import SensorEvaluator
    from ..launcher import RunLauncher
    from ..project import ProjectRef
    from ..settings import Settings
    from ..storage import Storage


@dataclass
class CliState:
    file: str | None = None
    module: str | None = None
    home_option: str | None = None
    verbose: bool = False
    database_url_option: str | None = None
    long_running: bool = False  # the daemon: retry a lost database forever, not for 30 s
    # Called once, just before the user's project is imported (the fast path's gc.freeze).
    before_user_code: Callable[[], None] | None = field(default=None, repr=False)
    _settings: Settings | None = field(default=None, repr=False)
    _ref: ProjectRef | None = field(default=None, repr=False)
    _definitions: Definitions | None = field(default=None, repr=False)
    _storage: Storage | None = field(default=None, repr=False)
    _reader: Storage | None = field(default=None, repr=False)
    _evaluator: SensorEvaluator | None = field(default=None, repr=False)
    _registered: bool = field(default=False, repr=False)

    def apply(
        self,
        *,
        file: str | None = None,
        module: str | None = None,
        home: str | None = None,
        verbose: bool | None = None,
        database_url: str | None = None,
    ) -> None:
        """Take global options given at one level (before or after the command); later wins."""
        from ..errors import RunsenseError

        if file is not None:
            self.file = file
        if module is not None:
            self.module = module
        if home is not None:
            self.home_option = home
        if database_url is not None:
            self.database_url_option = database_url
        self.verbose = self.verbose or bool(verbose)
        if self.file and self.module:
            raise RunsenseError("give -f/--file or -m/--module, not both")

    @property
    def home(self) -> Path:
        return resolve_home(self.home_option)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            from ..settings import find_settings

            self._settings = find_settings()
        return self._settings

    @property
    def database_url(self) -> str | None:
        """--database-url, else RUNSENSE_DATABASE_URL, else the settings' database_url."""
        from ..storage import database_url

        return database_url(self.database_url_option) or self.settings.get("database_url")

    def setting(self, key: str, flag: object, default: object) -> object:
        """A flag given on the command line wins over the settings, which win over defaults."""
        return flag if flag is not None else self.settings.get(key, default)

    @property
    def project_ref(self) -> ProjectRef:
        if self._ref is None:
            from ..project import find_project

            self._ref = find_project(self.file, self.module)
        return self._ref

    @property
    def definitions(self) -> Definitions:
        if self._definitions is None:
            import contextlib

            if self.before_user_code is not None:
                self.before_user_code, call = None, self.before_user_code
                call()

            from ..project import load_project

            # What a project prints at import goes to stderr: stdout may hold a --json document.
            with contextlib.redirect_stdout(sys.stderr):
                self._definitions = load_project(self.project_ref)
        return self._definitions

    @property
    def storage(self) -> Storage:
        """The home's storage; opening it registers the project's sensors (first sight only)."""
        if self._storage is None:
            from ..storage import open_storage

            self._storage = open_storage(
                self.home_option,
                url=self.database_url,
                give_up_after=None if self.long_running else 30.0,
            )
        return self._storage

    @property
    def opened(self) -> Storage | None:
        """The storage this command has opened, if any (to name it in an error)."""
        return self._storage or self._reader

    @property
    def reader(self) -> Storage:
        """Storage for commands that only read: a missing database is empty, not created."""
        if self._storage is None and self._reader is None:
            from ..storage import open_storage

            # A missing SQLite file opens as an empty in-memory database, and is not created.
            self._reader = open_storage(self.home_option, url=self.database_url, create=False)
        return self._storage if self._storage is not None else self._reader  # type: ignore[return-value]

    @property
    def evaluator(self) -> SensorEvaluator:
        """The project's sensor evaluator; first sight registers sensors (and starts RUNNING ones)."""
        evaluator = self.evaluator_unregistered
        if not self._registered:
            evaluator.register_sensors()
            self._registered = True
        return evaluator

    def register_sensors(self) -> None:
        """First sight of the project's sensors (RUNNING defaults start), as `evaluator` does,
        without importing the evaluator: all `runsense run` needs of it (SPEC §8: ≤ 0.12 s)."""
        if not self._registered:
            if self.definitions.sensors:
                from ..registration import register_sensors

                register_sensors(self.storage, self.definitions)
            self._registered = True

    @property
    def evaluator_unregistered(self) -> SensorEvaluator:
        if self._evaluator is None:
            from ..evaluation import SensorEvaluator

            definitions = self.definitions
            show_sensor_logs()
            self._evaluator = SensorEvaluator(
                self.storage, definitions, self.project_ref.to_origin()
            )
            timeout = self.settings.get("sensor_timeout")
            if timeout is not None:
                self._evaluator.call_timeout = float(timeout)
        return self._evaluator

    def launcher(
        self, max_concurrent_runs: int | None = None, runs_per_worker: int | None = None
    ) -> RunLauncher:
        """With the project loaded here, the launcher forks warm workers from this process."""
        from ..launcher import (
            DEFAULT_HEARTBEAT_TIMEOUT_S,
            DEFAULT_MAX_CONCURRENT_RUNS,
            DEFAULT_RUNS_PER_WORKER,
            RunLauncher,
        )
        from ..worker import LoadedProject

        project = None
        if self._definitions is not None:
            project = LoadedProject(self.project_ref.to_origin(), self._definitions)

        return RunLauncher(
            self.storage,
            self.home,
            int(
                self.setting(
                    "max_concurrent_runs", max_concurrent_runs, DEFAULT_MAX_CONCURRENT_RUNS
                )
            ),  # type: ignore[arg-type]
            heartbeat_timeout=float(
                self.setting("heartbeat_timeout", None, DEFAULT_HEARTBEAT_TIMEOUT_S)  # type: ignore[arg-type]
            ),
            database_url=self.database_url,
            project=project,
            runs_per_worker=int(
                self.setting("runs_per_worker", runs_per_worker, DEFAULT_RUNS_PER_WORKER)  # type: ignore[arg-type]
            ),
        )

    def close(self) -> None:
        for storage in (self._storage, self._reader):
            if storage is not None:
                storage.close()
        self._storage = self._reader = None


def show_sensor_logs() -> None:
    """Send what sensors write to `context.log` to stderr, labelled with the sensor's name."""
    import logging

    class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
        # sys.stderr as it is at each record, not at the first command: CliRunner and other
        # in-process callers swap (and close) it between commands.
        def emit(self, record: logging.LogRecord) -> None:
            self.stream = sys.stderr
            super().emit(record)

    logger = logging.getLogger("runsense.sensor")
    if not logger.handlers:
        handler = StderrHandler()
        handler.setFormatter(logging.Formatter("[%(name)s] %(levelname)s %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
