"""Typed errors shared by every layer.

Each error carries a user-facing message that says what to do next. ``retryable``
separates temporary failures (retry with backoff) from permanent ones. HTTP
status mapping happens in exactly one place per app (see ``server.api.errors``).
"""

from __future__ import annotations

from typing import Any


class MaasError(Exception):
    """Base class for all errors the platform raises on purpose."""

    code: str = "internal_error"
    status_code: int = 500
    retryable: bool = False

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}


class InvalidRequest(MaasError):
    code = "invalid_request"
    status_code = 400


class Unauthenticated(MaasError):
    code = "unauthenticated"
    status_code = 401


class Forbidden(MaasError):
    code = "forbidden"
    status_code = 403


class NotFound(MaasError):
    code = "not_found"
    status_code = 404


class Conflict(MaasError):
    code = "conflict"
    status_code = 409


class TooManyRequests(MaasError):
    code = "rate_limited"
    status_code = 429
    retryable = True

    def __init__(
        self, message: str, *, retry_after: float, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message, details=details)
        self.retry_after = retry_after


class Unavailable(MaasError):
    code = "unavailable"
    status_code = 503
    retryable = True


class ConfigurationError(MaasError):
    """Bad settings or flags: permanent, fix the configuration."""

    code = "configuration_error"
    status_code = 500


class SecretKeyMismatch(ConfigurationError):
    """A value encrypted at rest does not open with the current secret key: permanent
    until the original key is restored or the value is set again."""

    code = "secret_key_mismatch"
