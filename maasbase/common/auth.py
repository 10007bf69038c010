"""Who is calling, and what they may do: shared by the server and the gateway."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Scope(StrEnum):
    """What an API key may be used for."""

    INFERENCE = "inference"  # the OpenAI-compatible /v1 API
    MANAGEMENT = "management"  # the /api/v1 management API
    ALL = "all"

    def allows_management(self) -> bool:
        return self in (Scope.MANAGEMENT, Scope.ALL)

    def allows_inference(self) -> bool:
        return self in (Scope.INFERENCE, Scope.ALL)


class PrincipalKind(StrEnum):
    USER = "user"  # logged in with a password (bearer token or session cookie)
    API_KEY = "api_key"
    WORKER = "worker"
    GATEWAY = "gateway"  # a standalone gateway, authenticated by its own credential


@dataclass(frozen=True)
class Principal:
    kind: PrincipalKind
    user_id: int | None
    name: str
    is_admin: bool
    scope: Scope
    allowed_models: tuple[str, ...] | None = None  # None: every model
    api_key_id: int | None = None
    worker_id: int | None = None
    gateway_id: int | None = None

    def may_use_model(self, model: str) -> bool:
        return self.allowed_models is None or model in self.allowed_models
