"""One settings object for every command: flags > ``MAAS_*`` environment > YAML file > defaults.

The YAML file is chosen with ``--config`` or ``MAAS_CONFIG``; its keys are the field
names below (``port: 9000``, ``database_url: ...``).
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Annotated, Any, Literal

import platformdirs
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from maasbase.common.errors import ConfigurationError

ENV_PREFIX = "MAAS_"


def default_data_dir() -> Path:
    """Per-user data folder (``~/.local/share/maas-base`` on Linux)."""
    return Path(platformdirs.user_data_dir("maas-base", appauthor=False))


class Settings(BaseSettings):
    """Everything a MaaS-Base process can be told."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="forbid", validate_default=True, frozen=True
    )

    config_file: Path | None = Field(default=None, description="Optional YAML config file.")
    host: str = Field(default="127.0.0.1", description="Address the HTTP server binds to.")
    port: int = Field(default=8080, ge=1, le=65535, description="HTTP port.")
    data_dir: Path = Field(default_factory=default_data_dir, description="State folder.")
    database_url: str | None = Field(
        default=None,
        description="postgresql://, mysql:// or sqlite:/// URL; empty = embedded PostgreSQL.",
    )
    bootstrap_password: SecretStr | None = Field(
        default=None, description="Password for the first admin user (first start only)."
    )
    token: SecretStr | None = Field(
        default=None, description="Worker registration token (generated when not given)."
    )
    secret_key: SecretStr | None = Field(
        default=None,
        description="Fernet key that encrypts provider API keys in the database [default: "
        "<data-dir>/secret_key, created on first start]. Set the same MAAS_SECRET_KEY on "
        "every server replica that shares a database. To rotate, give the new key first "
        "and the old one after it (comma-separated; one per line in the file).",
    )
    log_level: str = Field(default="info", description="debug, info, warning or error.")
    access_token_ttl_seconds: int = Field(default=86_400, ge=60)
    login_max_failures: int = Field(default=5, ge=1)
    login_lockout_seconds: int = Field(default=300, ge=1)
    metrics_public: bool = Field(
        default=False, description="Serve /metrics without authentication."
    )
    secure_cookies: bool = Field(
        default=False, description="Mark the session cookie Secure (behind HTTPS)."
    )
    trusted_proxies: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Addresses or networks (CIDR) of reverse proxies whose "
        "X-Forwarded-For / X-Forwarded-Proto headers are believed, comma-separated; "
        "from any other peer those headers are ignored and the socket's address counts "
        "(login throttling, logs). Default: none.",
    )
    worker_timeout: float = Field(
        default=30.0, gt=0, description="Seconds without heartbeat before a worker is unreachable."
    )
    reschedule_grace: float = Field(
        default=60.0,
        ge=0,
        description="Seconds an instance of an unreachable worker waits "
        "for it before being rescheduled elsewhere.",
    )
    heartbeat_interval: float = Field(
        default=5.0, gt=0, description="Seconds between worker heartbeats (told to workers)."
    )

    redis_url: str | None = Field(
        default=None,
        description="Redis shared by gateway replicas for exact rate limits and quotas.",
    )

    # Worker side.
    no_worker: bool = Field(default=False, description="start: run no local worker.")
    server_url: str | None = Field(default=None, description="Server a worker joins.")
    worker_name: str | None = Field(default=None, description="Worker name [default: hostname].")
    worker_labels: dict[str, str] = Field(default_factory=dict, description="Worker labels.")
    worker_host: str | None = Field(
        default=None,
        description="Bind address of the worker API [default: 0.0.0.0 for a "
        "remote worker, --host for the local one].",
    )
    worker_port: int = Field(default=10150, ge=1, le=65535, description="Worker API port.")
    worker_address: str | None = Field(
        default=None,
        description="Address the server uses to reach this worker [default: "
        "the local address that routes to the server].",
    )
    worker_runtime: Literal["process", "container"] = Field(
        default="process",
        description="Run engines as local processes or in containers (Docker/Podman).",
    )
    connect_timeout: float = Field(
        default=30.0, gt=0, description="Seconds a starting worker keeps trying the server."
    )
    simulate_gpus: str | None = Field(
        default=None, description="Simulated GPUs: spec like 4xH100:80,2xL4:24 or a fixture."
    )

    @field_validator("log_level")
    @classmethod
    def _check_log_level(cls, value: str) -> str:
        value = value.lower()
        if value not in {"debug", "info", "warning", "error", "critical"}:
            raise ValueError("log_level must be one of debug, info, warning, error, critical")
        return value

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _split_proxies(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _check_proxies(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError as exc:
                raise ValueError(
                    f"trusted_proxies: {entry!r} is not an IP address or network "
                    "(e.g. 10.0.0.5 or 10.0.0.0/24)"
                ) from exc
        return value

    @field_validator("data_dir")
    @classmethod
    def _expand_data_dir(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        yaml_path = _yaml_path(init_settings)
        if yaml_path is not None:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=yaml_path))
        return tuple(sources)


def _yaml_path(init_settings: PydanticBaseSettingsSource) -> Path | None:
    init_values = init_settings()
    raw = init_values.get("config_file") or os.environ.get(ENV_PREFIX + "CONFIG_FILE")
    raw = raw or os.environ.get(ENV_PREFIX + "CONFIG")
    if not raw:
        return None
    path = Path(str(raw)).expanduser()
    if not path.is_file():
        raise ConfigurationError(f"config file {path} does not exist; fix --config / MAAS_CONFIG")
    return path


def load_settings(**overrides: Any) -> Settings:
    """Build settings from flags (``overrides``; ``None`` values mean "not given")."""
    given = {key: value for key, value in overrides.items() if value is not None}
    try:
        return Settings(**given)
    except ConfigurationError:
        raise
    except ValueError as exc:
        raise ConfigurationError(f"invalid configuration: {exc}") from exc
