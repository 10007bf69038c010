"""Wire contract between standalone gateways and the server: registration.

A gateway registers once with the registration token (or re-attaches with its own
credential) and then authenticates every call with the ``mbg_...`` credential it got.
New fields must come with defaults.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from maasbase.common.workers import WORKER_NAME_PATTERN

GATEWAY_CREDENTIAL_PREFIX = "mbg_"
GATEWAY_NAME_PATTERN = WORKER_NAME_PATTERN


class GatewayRegistration(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str = Field(pattern=GATEWAY_NAME_PATTERN)


class GatewayRegistered(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: int
    name: str
    credential: str = Field(description="The gateway's credential (mbg_...): shown once.")
