from __future__ import annotations

from pydantic import BaseModel, Field

from maasbase.common.bounds import Text
from maasbase.server.schemas.common import Strict


class LoginRequest(Strict):
    username: Text = Field(min_length=1, max_length=64)
    password: Text = Field(min_length=1, max_length=1024)


class TokenResponse(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int = Field(description="Seconds until the token expires.")
