"""Tables. Every change here needs an Alembic migration in ``migrations/versions``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from maasbase.server.db.base import Base, UTCDateTime, utcnow


class SystemSetting(Base):
    """Cluster-wide values shared by all server replicas (registration token hash)."""

    __tablename__ = "system_settings"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class RevokedSession(Base):
    """Session tokens ended before they expire (logout); rows go once they would have
    expired anyway."""

    __tablename__ = "revoked_sessions"

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, index=True)


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    full_name: Mapped[str | None] = mapped_column(String(255), nullable=True)
    password_hash: Mapped[str] = mapped_column(String(255), nullable=False)
    is_admin: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    is_active: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    # Bumped on every password change; tokens signed with an older value stop working.
    token_version: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    # Limits shared by all the user's API keys (None: unlimited), set by admins.
    rpm_limit: Mapped[int | None] = mapped_column(Integer, nullable=True)
    tpm_limit: Mapped[int | None] = mapped_column(Integer, nullable=True)
    token_quota: Mapped[int | None] = mapped_column(Integer, nullable=True)
    quota_period: Mapped[str] = mapped_column(String(8), nullable=False, default="month")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime, nullable=False, default=utcnow, onupdate=utcnow
    )


class ApiKey(Base):
    __tablename__ = "api_keys"
    # Names are unique among a user's keys that are not revoked: ``active_name`` holds the
    # name while the key is usable and NULL after revocation (NULLs never collide).
    __table_args__ = (
        UniqueConstraint("user_id", "active_name", name="uq_api_keys_user_id_active_name"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True
    )
    name: Mapped[str] = mapped_column(String(128), nullable=False)
    active_name: Mapped[str | None] = mapped_column(String(128), nullable=True)
    access_key: Mapped[str] = mapped_column(String(32), unique=True, nullable=False)
    secret_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    scope: Mapped[str] = mapped_column(String(16), nullable=False, default="all")
    allowed_models: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    rpm_limit: Mapped[int | None] = mapped_column(Integer, nullable=True)
    tpm_limit: Mapped[int | None] = mapped_column(Integer, nullable=True)
    token_quota: Mapped[int | None] = mapped_column(Integer, nullable=True)
    quota_period: Mapped[str] = mapped_column(String(8), nullable=False, default="month")
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class CredentialChange(Base):
    """Append-only feed of credential changes that gateways follow to drop cached grants:
    a key (``access_key``) or all of a user's keys (``user_id``). Written in the same
    transaction as the change; rows older than an hour are pruned."""

    __tablename__ = "credential_changes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    access_key: Mapped[str | None] = mapped_column(String(32), nullable=True)
    user_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, index=True)


class Worker(Base):
    __tablename__ = "workers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    labels: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    state: Mapped[str] = mapped_column(String(16), nullable=False, default="not_ready")
    state_message: Mapped[str] = mapped_column(String(512), nullable=False, default="")
    maintenance: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    address: Mapped[str] = mapped_column(String(255), nullable=False)
    port: Mapped[int] = mapped_column(Integer, nullable=False)
    version: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    hardware: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    # Worker credential ``mbw_<access>_<secret>``: the access part finds the row,
    # only a SHA-256 of the secret is stored.
    credential_access: Mapped[str] = mapped_column(String(32), unique=True, nullable=False)
    credential_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    registered_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    last_heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    state_changed_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime, nullable=False, default=utcnow, onupdate=utcnow
    )


class Gateway(Base):
    """A standalone gateway: it receives routing tables (provider secrets included),
    checks API keys and sends usage, with its own revocable credential."""

    __tablename__ = "gateways"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    # Gateway credential ``mbg_<access>_<secret>``, stored like worker credentials.
    credential_access: Mapped[str] = mapped_column(String(32), unique=True, nullable=False)
    credential_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Model(Base):
    """A deployed model: what to run and how many replicas."""

    __tablename__ = "models"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128), unique=True, nullable=False)
    description: Mapped[str] = mapped_column(String(1024), nullable=False, default="")
    source: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    backend: Mapped[str] = mapped_column(String(64), nullable=False)
    backend_version: Mapped[str | None] = mapped_column(String(64), nullable=True)
    backend_parameters: Mapped[list[Any]] = mapped_column(JSON, nullable=False, default=list)
    # Plain variables only; secret ones live encrypted in ``secret_env``.
    env: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    # Secret variables: name -> value encrypted with the secret key ("fernet:...", see
    # server.security.secret_box); null on rows from older versions.
    secret_env: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    replicas: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    placement: Mapped[str] = mapped_column(String(16), nullable=False, default="spread")
    worker_selector: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    gpu_selector: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    gpus_per_replica: Mapped[int | None] = mapped_column(Integer, nullable=True)
    categories: Mapped[list[Any]] = mapped_column(JSON, nullable=False, default=list)
    # Hash of everything that changes how an instance runs; a new value rolls instances.
    spec_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime, nullable=False, default=utcnow, onupdate=utcnow
    )


class ModelInstance(Base):
    """One replica of a model; its state follows ``policies.instance_state``."""

    __tablename__ = "model_instances"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(160), unique=True, nullable=False)
    model_id: Mapped[int] = mapped_column(
        ForeignKey("models.id", ondelete="CASCADE"), nullable=False, index=True
    )
    spec_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    state: Mapped[str] = mapped_column(String(16), nullable=False, default="pending")
    state_message: Mapped[str] = mapped_column(Text, nullable=False, default="")
    state_changed_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    worker_id: Mapped[int | None] = mapped_column(
        ForeignKey("workers.id", ondelete="SET NULL"), nullable=True, index=True
    )
    gpu_vendor: Mapped[str | None] = mapped_column(String(16), nullable=True)
    gpu_indexes: Mapped[list[Any]] = mapped_column(JSON, nullable=False, default=list)
    tensor_parallel_size: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    # What the placement reserved: {"gpu_bytes": {"<index>": bytes}, "ram_bytes": n, ...}
    claim: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    port: Mapped[int | None] = mapped_column(Integer, nullable=True)
    pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # Tokens of context the running engine takes, as it reported (None: not known).
    context_length: Mapped[int | None] = mapped_column(Integer, nullable=True)
    download: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    restart_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    next_restart_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime, nullable=False, default=utcnow, onupdate=utcnow
    )


class BackendRow(Base):
    """A user-defined inference backend (built-ins ship with the package)."""

    __tablename__ = "backends"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    definition: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime, nullable=False, default=utcnow, onupdate=utcnow
    )


class Provider(Base):
    """An external OpenAI-compatible server or cloud API whose models the gateway routes."""

    __tablename__ = "providers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    base_url: Mapped[str] = mapped_column(String(512), nullable=False)
    # Sent upstream as a bearer token, so it cannot be hashed: stored encrypted
    # ("fernet:...", see server.security.secret_box; older rows hold plain text until the
    # next start encrypts them); never returned by the API (only whether one is set).
    api_key: Mapped[str | None] = mapped_column(Text, nullable=True)
    models: Mapped[list[Any]] = mapped_column(JSON, nullable=False, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime, nullable=False, default=utcnow, onupdate=utcnow
    )


class UsageRecord(Base):
    """One proxied inference request, as metered by a gateway."""

    __tablename__ = "usage_records"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    time: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, index=True)
    api_key_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    user_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    model: Mapped[str] = mapped_column(String(128), nullable=False, index=True)
    endpoint: Mapped[str] = mapped_column(String(64), nullable=False)
    upstream_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    status: Mapped[int] = mapped_column(Integer, nullable=False)
    prompt_tokens: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    latency_ms: Mapped[float] = mapped_column(Float, nullable=False, default=0.0)
    ttft_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    stream: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    # The gateway that sent the record (None: the control plane's own, or not known).
    gateway_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
