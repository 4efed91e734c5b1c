"""First sight of a project's sensors: the rule every command and the daemon share."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .records import SensorState
from .sensors import DefaultSensorStatus

if TYPE_CHECKING:
    from .definitions import Definitions
    from .storage import Storage


def register_sensors(storage: Storage, definitions: Definitions) -> dict[str, SensorState]:
    """Rows for sensors seen for the first time, RUNNING defaults started now (the evaluator's
    `register_sensors`, and `runsense run`'s, which loads no evaluator: SPEC §8)."""
    return {
        name: storage.ensure_sensor(
            definitions.location, name, sensor.default_status == DefaultSensorStatus.RUNNING
        )
        for name, sensor in definitions.sensors.items()
    }
