from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from maasbase.common.gateways import GATEWAY_NAME_PATTERN
from maasbase.server.schemas.common import Strict


class GatewayCreate(Strict):
    name: str = Field(pattern=GATEWAY_NAME_PATTERN, description="Unique name of the gateway.")


class GatewayOut(BaseModel):
    """A gateway identity as listed: never its secret."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    credential_access: str = Field(description="Public part of the credential (mbg_<access>_...).")
    created_at: datetime
    last_seen_at: datetime | None = Field(
        description="Last authenticated call (updated at most every 30 seconds)."
    )


class GatewayCreated(GatewayOut):
    credential: str = Field(
        description="The full credential (mbg_...). Shown only once: give it to the gateway "
        "with --token."
    )
