"""Wire contract between the control plane and gateways: where each model is served,
and who may call it.

A gateway holds a ``RoutingTable`` (followed through a long-poll watch, kept when the
server is down), resolves API keys through the server (``KeyCheck`` → ``KeyGrant``,
cached and dropped as soon as the ``CredentialChanges`` feed names the key or its user),
and sends ``UsageRecord`` batches back. New fields must come with defaults.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class RouteKind(StrEnum):
    DEPLOYMENT = "deployment"  # instances run by MaaS-Base workers
    PROVIDER = "provider"  # an external OpenAI-compatible server or cloud API


class Upstream(BaseModel):
    """One place a model is served: a running instance, or a provider's base URL."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(description="Stable id, e.g. 'instance:12' or 'provider:openai'.")
    base_url: str = Field(description="Up to and including /v1, e.g. http://10.0.0.5:40001/v1.")
    weight: float = Field(default=1.0, gt=0)
    api_key: str | None = Field(default=None, description="Bearer token the upstream needs.")
    upstream_model: str | None = Field(
        default=None, description="Model name to send upstream, when it differs."
    )
    anthropic_messages: bool = Field(
        default=False, description="Serves Anthropic's /v1/messages itself (no translation)."
    )


class RoutedModel(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    kind: RouteKind = RouteKind.DEPLOYMENT
    categories: list[str] = Field(default_factory=list)
    upstreams: list[Upstream] = Field(default_factory=list)
    owned_by: str = "maas-base"
    created: int = 0


class RoutingTable(BaseModel):
    revision: str
    models: list[RoutedModel] = Field(default_factory=list)


class KeyLimits(BaseModel):
    """Limits of a key, or of a user (shared by all the user's keys); None means
    unlimited."""

    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    token_quota: int | None = Field(default=None, description="Tokens per quota period.")
    quota_period: str = Field(default="month", description="day or month.")
    quota_used: int = Field(
        default=0, description="Tokens already used in the current period (when granted)."
    )
    quota_period_start: float | None = Field(
        default=None, description="Start (epoch seconds) of the period quota_used covers."
    )


def quota_period(period: str, now: float) -> tuple[float, float]:
    """Start and end (epoch seconds, UTC) of the quota period that contains ``now``."""
    moment = datetime.fromtimestamp(now, UTC)
    if period == "day":
        start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
        return start.timestamp(), start.timestamp() + 86400.0
    start = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    year, month = (start.year + 1, 1) if start.month == 12 else (start.year, start.month + 1)
    return start.timestamp(), start.replace(year=year, month=month).timestamp()


class KeyCheck(BaseModel):
    """Gateway → server: is this presented API key valid?"""

    key: str


class KeyGrant(BaseModel):
    """Server → gateway: who the key belongs to and what it may do."""

    api_key_id: int
    user_id: int
    username: str
    scope: str
    allowed_models: list[str] | None = None
    expires_at: datetime | None = None
    limits: KeyLimits = Field(default_factory=KeyLimits)
    user_limits: KeyLimits = Field(
        default_factory=KeyLimits,
        description="The user's limits, shared by all their keys; quota_used counts the "
        "tokens of all their keys in the period.",
    )


UNKNOWN_KEY = "invalid API key; check the key or create a new one"


@dataclass(frozen=True)
class KeyRefused:
    """The control plane refused a key; ``message`` says why (revoked, expired, ...)."""

    message: str = UNKNOWN_KEY


class CredentialChange(BaseModel):
    """A key (``access_key``) or a user (``user_id``, all their keys) changed: revoked,
    limits changed, deactivated, deleted. Gateways drop what they cached for it."""

    id: int
    access_key: str | None = None
    user_id: int | None = None


class CredentialChanges(BaseModel):
    """Server → gateway: the changes after the gateway's cursor."""

    cursor: int = Field(description="The newest change covered; send it as 'after' next.")
    changes: list[CredentialChange] = Field(default_factory=list)
    reset: bool = Field(
        default=False,
        description="Changes after the cursor were pruned: drop every cached grant.",
    )


class UsageRecord(BaseModel):
    """One proxied request, as metered by a gateway."""

    time: datetime
    api_key_id: int | None
    user_id: int | None
    model: str
    endpoint: str = Field(description="e.g. chat.completions, embeddings")
    upstream_id: str | None = None
    status: int
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: float = 0.0
    ttft_ms: float | None = None
    stream: bool = False


class UsageBatch(BaseModel):
    records: list[UsageRecord]


@dataclass(slots=True)
class Usage:
    """One request as the gateway meters it: a plain object, cheap on the request path.
    ``row()`` gives the fields of a ``UsageRecord`` without validating them again."""

    time: float  # seconds since the epoch
    api_key_id: int | None
    user_id: int | None
    model: str
    endpoint: str
    upstream_id: str | None
    status: int
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: float = 0.0
    ttft_ms: float | None = None
    stream: bool = False

    def row(self) -> dict[str, Any]:
        return {
            "time": datetime.fromtimestamp(self.time, UTC),
            "api_key_id": self.api_key_id,
            "user_id": self.user_id,
            "model": self.model,
            "endpoint": self.endpoint,
            "upstream_id": self.upstream_id,
            "status": self.status,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "latency_ms": round(self.latency_ms, 3),
            "ttft_ms": None if self.ttft_ms is None else round(self.ttft_ms, 3),
            "stream": self.stream,
        }

    def to_record(self) -> UsageRecord:
        return UsageRecord.model_validate(self.row())
