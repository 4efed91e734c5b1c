"""Starting, stopping and resetting sensors: what `runsense sensor start/stop/reset` do.

A sensor's stored status follows its code's `default_status` until a person starts or stops it;
from then on that choice wins (Dagster's rule), until `reset` hands it back to the code. The cursor
rule of SPEC §3 holds however a sensor becomes running: a first start begins at the newest event,
a restart resumes where the sensor stopped (or at the newest event with `from_now`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .records import SensorStatus
from .sensors import DefaultSensorStatus, RunStatusSensorDefinition

if TYPE_CHECKING:
    from .evaluation import SensorEvaluator


@dataclass(frozen=True)
class StatusChange:
    sensor: str
    was: SensorStatus
    now: SensorStatus
    cursor: int
    waiting: int = 0  # status events the sensor will handle on its next tick

    @property
    def changed(self) -> bool:
        return self.was != self.now


def start_sensor(
    evaluator: SensorEvaluator, sensor: RunStatusSensorDefinition, *, from_now: bool = False
) -> StatusChange:
    storage = evaluator.storage
    before = evaluator.state(sensor)
    cursor = storage.newest_event_id() if from_now else None
    waiting = 0
    if before.status != SensorStatus.RUNNING and not from_now:
        waiting = evaluator.lag(sensor, before)
    storage.set_sensor_status(before.sensor_id, SensorStatus.RUNNING, cursor=cursor)
    after = evaluator.state(sensor)
    return StatusChange(sensor.name, before.status, after.status, after.cursor, waiting)


def stop_sensor(evaluator: SensorEvaluator, sensor: RunStatusSensorDefinition) -> StatusChange:
    before = evaluator.state(sensor)
    evaluator.storage.set_sensor_status(before.sensor_id, SensorStatus.STOPPED)
    return StatusChange(sensor.name, before.status, SensorStatus.STOPPED, before.cursor)


def reset_sensor(evaluator: SensorEvaluator, sensor: RunStatusSensorDefinition) -> StatusChange:
    before = evaluator.state(sensor)
    running = sensor.default_status == DefaultSensorStatus.RUNNING
    evaluator.storage.reset_sensor_status(before.sensor_id, running)
    after = evaluator.state(sensor)
    return StatusChange(sensor.name, before.status, after.status, after.cursor)
