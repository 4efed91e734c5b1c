"""The `Definitions` object a user module exposes: one project's (code location's) jobs and
sensors. Ops and jobs themselves live in `jobs`, sensors in `sensors`."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .errors import DefinitionError, RunsenseError, suggest
from .jobs import JobDefinition, OpDefinition, job, module_location, op

if TYPE_CHECKING:
    # A project that declares sensors has imported them; one that does not (a one-op
    # `runsense run`) need not pay for sensors, their contexts and logging.
    from .sensors import RunStatusSensorDefinition

__all__ = ["Definitions", "JobDefinition", "OpDefinition", "job", "op"]


class Definitions:
    """Everything one project (a code location) offers: its jobs and its sensors."""

    def __init__(
        self,
        jobs: Iterable[JobDefinition] | None = None,
        sensors: Iterable[RunStatusSensorDefinition] | None = None,
    ) -> None:
        self.location = module_location(sys._getframe(1).f_globals.get("__name__", "__main__"))
        self.jobs: dict[str, JobDefinition] = {}
        self.sensors: dict[str, RunStatusSensorDefinition] = {}
        for job_def in jobs or []:
            self._add_job(job_def)
        for sensor in sensors or []:
            if not hasattr(sensor, "evaluate_run"):
                raise DefinitionError(
                    f"sensors= holds {sensor!r}, which is not a run status sensor"
                )
            if sensor.name in self.sensors:
                raise DefinitionError(
                    f"two sensors are named '{sensor.name}'", "give each sensor a unique name"
                )
            self.sensors[sensor.name] = sensor
            for requested in sensor.request_jobs:
                if self.jobs.get(requested.name) is not requested:
                    self._add_job(requested)
        self.set_location(self.location)

    def _add_job(self, job_def: JobDefinition) -> None:
        if not isinstance(job_def, JobDefinition):
            raise DefinitionError(f"jobs= holds {job_def!r}, which is not a @job")
        if self.jobs.get(job_def.name) is job_def:
            return  # the same job listed twice is harmless
        if job_def.name in self.jobs:
            raise DefinitionError(
                f"two jobs are named '{job_def.name}'", "give each job a unique name"
            )
        self.jobs[job_def.name] = job_def

    def set_location(self, location: str) -> None:
        """Name the code location; the loader calls this with the module's own name."""
        self.location = location
        for job_def in self.jobs.values():
            job_def.location = location

    def get_job(self, name: str) -> JobDefinition:
        if name in self.jobs:
            return self.jobs[name]
        raise RunsenseError(f"unknown job '{name}'", _suggest(name, self.jobs, "runsense jobs"))

    def get_sensor(self, name: str) -> RunStatusSensorDefinition:
        if name in self.sensors:
            return self.sensors[name]
        raise RunsenseError(
            f"unknown sensor '{name}'", _suggest(name, self.sensors, "runsense sensor list")
        )


def _suggest(name: str, known: Sequence[str] | Mapping[str, Any], command: str) -> str:
    return suggest(name, known, command) or ""
