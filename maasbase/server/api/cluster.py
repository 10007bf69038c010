"""Cluster-wide secrets an admin manages: the registration token."""

from __future__ import annotations

import secrets

from fastapi import APIRouter
from pydantic import BaseModel, Field

from maasbase.common.errors import Conflict
from maasbase.server.api.deps import Admin, Session, State
from maasbase.server.api.openapi import error_responses
from maasbase.server.bootstrap import TOKEN_FILE, write_secret_file
from maasbase.server.db import system_settings
from maasbase.server.security import api_keys as key_material

router = APIRouter(prefix="/api/v1/cluster", tags=["cluster"])


class RegistrationToken(BaseModel):
    token: str = Field(description="The new registration token. Shown only once.")
    token_file: str = Field(description="Where this server also wrote it (mode 0600).")


@router.post(
    "/registration-token", response_model=RegistrationToken, responses=error_responses(409)
)
async def rotate_registration_token(
    _admin: Admin, state: State, session: Session
) -> RegistrationToken:
    """Issue a new registration token; the old one stops working at once. Registered
    workers and gateways use their own credentials and carry on."""
    if state.settings.token is not None:
        raise Conflict(
            "this server takes its registration token from the 'token' setting "
            "(--token / MAAS_TOKEN), which would restore it on the next start; change the "
            "setting and restart instead"
        )
    token = secrets.token_hex(32)
    token_file = state.settings.data_dir / TOKEN_FILE
    await system_settings.put(
        session, system_settings.REGISTRATION_TOKEN_HASH, key_material.hash_secret(token)
    )
    write_secret_file(token_file, token)
    await session.commit()
    return RegistrationToken(token=token, token_file=str(token_file))
