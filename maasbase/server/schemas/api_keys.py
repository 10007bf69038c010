from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from maasbase.common.auth import Scope
from maasbase.common.bounds import PositiveDbInt, Text
from maasbase.server.schemas.common import Strict


class ApiKeyCreate(Strict):
    name: Text = Field(min_length=1, max_length=128)
    scope: Scope = Scope.ALL
    allowed_models: list[Annotated[Text, Field(max_length=128)]] | None = Field(
        default=None,
        description="Model names this key may use (at least one); absent means all models.",
    )
    expires_at: datetime | None = Field(
        default=None, description="ISO 8601 time with a time zone; absent means never."
    )
    rpm_limit: PositiveDbInt | None = Field(default=None, description="Requests per minute.")
    tpm_limit: PositiveDbInt | None = Field(default=None, description="Tokens per minute.")
    token_quota: PositiveDbInt | None = Field(default=None, description="Tokens per quota period.")
    quota_period: Literal["day", "month"] = "month"

    @field_validator("allowed_models")
    @classmethod
    def _clean_models(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        cleaned = sorted({m.strip() for m in value if m.strip()})
        if not cleaned:
            raise ValueError(
                "give at least one model name, or leave allowed_models out for every model"
            )
        if len(cleaned) > 1000:
            raise ValueError("at most 1000 models per key")
        return cleaned

    @field_validator("expires_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("expires_at needs a time zone, e.g. 2027-01-01T00:00:00Z")
        return value


class ApiKeyOut(BaseModel):
    """A key as listed: never the secret."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    user_id: int
    access_key: str = Field(description="Public part of the key (mb_<access_key>_...).")
    scope: Scope
    allowed_models: list[str] | None
    expires_at: datetime | None
    rpm_limit: int | None = None
    tpm_limit: int | None = None
    token_quota: int | None = None
    quota_period: str = "month"
    revoked_at: datetime | None
    created_at: datetime


class ApiKeyCreated(ApiKeyOut):
    key: str = Field(description="The full key. Shown only once: store it now.")


class ApiKeyLimits(Strict):
    """Admin changes to a key's limits; null removes a limit."""

    rpm_limit: PositiveDbInt | None = None
    tpm_limit: PositiveDbInt | None = None
    token_quota: PositiveDbInt | None = None
    quota_period: Literal["day", "month"] | None = None
