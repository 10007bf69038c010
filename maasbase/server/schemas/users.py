from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from maasbase.common.bounds import PositiveDbInt, Text
from maasbase.server.schemas.common import Strict

USERNAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$"


class UserOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    username: str
    full_name: str | None
    is_admin: bool
    is_active: bool
    rpm_limit: int | None = Field(default=None, description="Requests per minute, all keys.")
    tpm_limit: int | None = Field(default=None, description="Tokens per minute, all keys.")
    token_quota: int | None = Field(default=None, description="Tokens per period, all keys.")
    quota_period: str = "month"
    created_at: datetime
    updated_at: datetime


class UserCreate(Strict):
    username: str = Field(pattern=USERNAME_PATTERN, description="Letters, digits, _ . @ -")
    password: Text = Field(max_length=1024)
    full_name: Text | None = Field(default=None, max_length=255)
    is_admin: bool = False


class UserUpdate(Strict):
    """Admin changes to a user; absent fields stay as they are."""

    full_name: Text | None = Field(default=None, max_length=255)
    is_admin: bool | None = None
    is_active: bool | None = None
    password: Text | None = Field(default=None, max_length=1024)
    # Limits shared by all the user's API keys; null removes a limit.
    rpm_limit: PositiveDbInt | None = Field(default=None, description="Requests per minute.")
    tpm_limit: PositiveDbInt | None = Field(default=None, description="Tokens per minute.")
    token_quota: PositiveDbInt | None = Field(default=None, description="Tokens per quota period.")
    quota_period: Literal["day", "month"] | None = None


LIMIT_FIELDS = ("rpm_limit", "tpm_limit", "token_quota", "quota_period")


class PasswordChange(Strict):
    current_password: Text = Field(max_length=1024)
    new_password: Text = Field(max_length=1024)
