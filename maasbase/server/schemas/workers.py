from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator

from maasbase.common.hardware import GpuDevice, HardwareReport
from maasbase.common.workers import WorkerState, validate_labels
from maasbase.server.schemas.common import Strict


class WorkerOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    state: WorkerState
    state_message: str
    maintenance: bool
    labels: dict[str, str]
    address: str
    port: int
    version: str
    hardware: HardwareReport
    simulated: bool = Field(description="True when the worker reports simulated GPUs.")
    last_heartbeat_at: datetime | None
    state_changed_at: datetime
    created_at: datetime


class WorkerUpdate(Strict):
    labels: dict[str, str] | None = Field(
        default=None, max_length=64, description="Replaces all labels of the worker."
    )
    maintenance: bool | None = None

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        return None if value is None else validate_labels(value)


class GpuOut(GpuDevice):
    id: str = Field(description="<worker name>:<vendor>:<index>")
    worker_id: int
    worker_name: str
    worker_state: WorkerState
