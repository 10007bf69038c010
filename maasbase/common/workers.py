"""Wire contract between workers and the server: registration, heartbeats, worker states.

New fields must come with defaults so that workers and servers of neighbouring
versions keep understanding each other.
"""

from __future__ import annotations

import re
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, field_validator

from maasbase.common.bounds import shorten
from maasbase.common.hardware import HardwareReport

WORKER_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
_LABEL_KEY = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_./-]{0,62})$")
_LABEL_VALUE = re.compile(r"^[A-Za-z0-9_./:-]{0,128}$")


class WorkerState(StrEnum):
    NOT_READY = "not_ready"  # registered, no heartbeat yet
    READY = "ready"  # heartbeats arrive in time
    UNREACHABLE = "unreachable"  # no heartbeat within the worker timeout
    MAINTENANCE = "maintenance"  # taken out of scheduling by an admin


def validate_labels(labels: dict[str, str]) -> dict[str, str]:
    for key, value in labels.items():
        if not _LABEL_KEY.fullmatch(key):
            raise ValueError(
                f"bad label key {shorten(key)}: use letters, digits and _ . / - "
                "(at most 63 characters)"
            )
        if not _LABEL_VALUE.fullmatch(value):
            raise ValueError(
                f"bad label value {shorten(value)} for {shorten(key)}: use letters, digits "
                "and _ . / : - (at most 128 characters)"
            )
    return labels


def parse_labels(text: str) -> dict[str, str]:
    """``"gpu=h100,zone=eu"`` → ``{"gpu": "h100", "zone": "eu"}``."""
    labels: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"bad label {part!r}: expected key=value, e.g. gpu=h100,zone=eu")
        labels[key.strip()] = value.strip()
    return validate_labels(labels)


class WorkerRegistration(BaseModel):
    """Sent by a worker when it starts (with the registration token or its own credential)."""

    model_config = ConfigDict(extra="ignore")

    name: str = Field(pattern=WORKER_NAME_PATTERN)
    labels: dict[str, str] = Field(default_factory=dict)
    hardware: HardwareReport
    address: str = Field(min_length=1, max_length=255, description="Host the server can reach.")
    port: int = Field(ge=1, le=65535, description="Port of the worker's own API.")
    version: str = ""

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        return validate_labels(value)


class WorkerRegistered(BaseModel):
    """The server's answer: the worker's identity and its own credentials."""

    id: int
    name: str
    credential: str = Field(description="Authenticates the worker to the server.")
    api_secret: str = Field(description="What the server presents when calling the worker.")
    data_plane_secret: str | None = Field(
        default=None,
        description="What gateways present to the worker's data-plane proxy "
        "(/proxy/instances/{id}/...); None from servers without one.",
    )
    heartbeat_interval: float
    state: WorkerState


class Heartbeat(BaseModel):
    model_config = ConfigDict(extra="ignore")

    hardware: HardwareReport


class HeartbeatAck(BaseModel):
    state: WorkerState
    heartbeat_interval: float
