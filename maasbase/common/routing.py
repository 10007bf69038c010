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

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator


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
    context_length: int | None = Field(
        default=None,
        description="Tokens of context of the model's running engines (the smallest), "
        "when they report it.",
    )
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


# Bounds of a usage record, those of the ``usage_records`` columns: counts are 32-bit
# integers (a row's prompt + completion tokens must fit one too), strings are limited.
MAX_TOKENS = 1_000_000_000
MAX_MILLISECONDS = 1e10  # about 115 days; MySQL keeps these in single-precision floats
MODEL_CHARS = 128
ENDPOINT_CHARS = 64
UPSTREAM_CHARS = 128
MAX_ID = 2**31 - 1
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
# Recorded instead of a model name the gateway does not serve (a 404): the name a client
# sent is never stored, so neither its length nor its content reaches the database.
UNKNOWN_MODEL = "(unknown)"


def _storable(value: str) -> str:
    """Text every database takes: valid UTF-8, no NUL (PostgreSQL refuses it)."""
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode (no lone surrogates)") from None
    return value


class UsageRecord(BaseModel):
    """One proxied request, as metered by a gateway. Every field is bounded to what the
    server stores: a record outside them is rejected on its own, never with its batch."""

    time: AwareDatetime
    api_key_id: int | None = Field(ge=1, le=MAX_ID)
    user_id: int | None = Field(ge=1, le=MAX_ID)
    model: str = Field(max_length=MODEL_CHARS)
    endpoint: str = Field(max_length=ENDPOINT_CHARS, description="e.g. chat.completions")
    upstream_id: str | None = Field(default=None, max_length=UPSTREAM_CHARS)
    status: int = Field(ge=100, le=599)
    prompt_tokens: int = Field(default=0, ge=0, le=MAX_TOKENS)
    completion_tokens: int = Field(default=0, ge=0, le=MAX_TOKENS)
    latency_ms: float = Field(default=0.0, ge=0, le=MAX_MILLISECONDS, allow_inf_nan=False)
    ttft_ms: float | None = Field(default=None, ge=0, le=MAX_MILLISECONDS, allow_inf_nan=False)
    stream: bool = False

    @field_validator("time")
    @classmethod
    def _recent(cls, value: datetime) -> datetime:
        if value < EARLIEST:
            raise ValueError(f"must be after {EARLIEST.date()}")
        return value

    @field_validator("model", "endpoint", "upstream_id")
    @classmethod
    def _text(cls, value: str | None) -> str | None:
        return None if value is None else _storable(value)


class UsageBatch(BaseModel):
    records: list[UsageRecord]


class RejectedUsage(BaseModel):
    index: int = Field(description="Position of the record in the batch.")
    reason: str


class UsageIngest(BaseModel):
    """Server → gateway: the answer to a usage batch. Rejected records are not stored and
    must not be sent again (they would be rejected again); the others are stored."""

    stored: int
    rejected: list[RejectedUsage] = Field(default_factory=list)


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

    def fit(self) -> None:
        """Bring every field within the bounds of ``UsageRecord``: token counts come from
        upstreams, which may send anything; a status the gateway could not tell (a
        cancelled request) is a 500."""
        self.prompt_tokens = _count(self.prompt_tokens)
        self.completion_tokens = _count(self.completion_tokens)
        if not 100 <= self.status <= 599:
            self.status = 500
        if len(self.model) > MODEL_CHARS:
            self.model = self.model[:MODEL_CHARS]
        if len(self.endpoint) > ENDPOINT_CHARS:
            self.endpoint = self.endpoint[:ENDPOINT_CHARS]
        if self.upstream_id is not None and len(self.upstream_id) > UPSTREAM_CHARS:
            self.upstream_id = self.upstream_id[:UPSTREAM_CHARS]
        self.latency_ms = _milliseconds(self.latency_ms) or 0.0
        if self.ttft_ms is not None:
            self.ttft_ms = _milliseconds(self.ttft_ms)

    def to_record(self) -> UsageRecord:
        return UsageRecord.model_validate(self.row())


def _count(value: int) -> int:
    if not isinstance(value, int):  # an upstream's JSON may hold anything
        return 0
    return value if 0 <= value <= MAX_TOKENS else (0 if value < 0 else MAX_TOKENS)


def _milliseconds(value: float) -> float | None:
    if 0.0 <= value <= MAX_MILLISECONDS:
        return value
    return None if value != value or value < 0 else MAX_MILLISECONDS  # NaN or negative
