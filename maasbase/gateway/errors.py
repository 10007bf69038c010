"""Gateway errors and their wire shapes: OpenAI's for ``/v1/*``, Anthropic's for ``/v1/messages``.

Every failure the gateway answers is a ``MaasError``; this module is the one place that
turns one into a status, headers and a JSON body.
"""

from __future__ import annotations

import json
import math
from typing import Any

from maasbase.common.errors import (
    Forbidden,
    InvalidRequest,
    MaasError,
    NotFound,
    TooManyRequests,
    Unauthenticated,
    Unavailable,
)


class ModelNotFound(NotFound):
    code = "model_not_found"


class ModelNotAllowed(Forbidden):
    code = "model_not_allowed"


class ScopeNotAllowed(Forbidden):
    code = "insufficient_scope"


class InvalidApiKey(Unauthenticated):
    code = "invalid_api_key"


class NoUpstream(Unavailable):
    """The model is known but has no running instance right now."""

    code = "model_unavailable"


class UpstreamFailed(MaasError):
    """Every instance tried failed to answer (connection refused, reset, timeout)."""

    code = "upstream_error"
    status_code = 502
    retryable = True


class UpstreamTimeout(UpstreamFailed):
    code = "upstream_timeout"
    status_code = 504


class RequestTooLarge(InvalidRequest):
    code = "request_too_large"
    status_code = 413


class HeadersTooLarge(InvalidRequest):
    code = "request_header_fields_too_large"
    status_code = 431


class RateLimited(TooManyRequests):
    code = "rate_limit_exceeded"


class QuotaExceeded(TooManyRequests):
    code = "insufficient_quota"


class MethodNotAllowed(InvalidRequest):
    code = "method_not_allowed"
    status_code = 405


_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    431: "invalid_request_error",
    429: "rate_limit_error",
    502: "upstream_error",
    503: "service_unavailable",
    504: "upstream_error",
}

_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
}

Headers = list[tuple[bytes, bytes]]
JSON_CONTENT = (b"content-type", b"application/json")


def _error_headers(exc: MaasError, body: bytes) -> Headers:
    headers = [JSON_CONTENT, (b"content-length", str(len(body)).encode())]
    if isinstance(exc, TooManyRequests):
        seconds = max(1, math.ceil(exc.retry_after))
        headers.append((b"retry-after", str(seconds).encode()))
    return headers


def openai_error(exc: MaasError) -> tuple[int, Headers, bytes]:
    """``{"error": {"message", "type", "code", "param"}}`` with the error's status."""
    payload: dict[str, Any] = {
        "error": {
            "message": exc.message,
            "type": _OPENAI_TYPES.get(exc.status_code, "server_error"),
            "code": exc.code,
            "param": exc.details.get("param"),
        }
    }
    body = json.dumps(payload).encode()
    return exc.status_code, _error_headers(exc, body), body


def anthropic_error(exc: MaasError) -> tuple[int, Headers, bytes]:
    """``{"type": "error", "error": {"type", "message"}}`` with the error's status."""
    payload = {
        "type": "error",
        "error": {
            "type": _ANTHROPIC_TYPES.get(exc.status_code, "api_error"),
            "message": exc.message,
        },
    }
    body = json.dumps(payload).encode()
    return exc.status_code, _error_headers(exc, body), body


def openai_stream_error(exc: MaasError) -> bytes:
    """The SSE event that ends a stream which failed after its first byte."""
    payload = {
        "error": {
            "message": exc.message,
            "type": _OPENAI_TYPES.get(exc.status_code, "server_error"),
            "code": exc.code,
            "param": None,
        }
    }
    return b"data: " + json.dumps(payload).encode() + b"\n\ndata: [DONE]\n\n"


def anthropic_stream_error(exc: MaasError) -> bytes:
    payload = {
        "type": "error",
        "error": {
            "type": _ANTHROPIC_TYPES.get(exc.status_code, "api_error"),
            "message": exc.message,
        },
    }
    return b"event: error\ndata: " + json.dumps(payload).encode() + b"\n\n"


class UpstreamRejected(MaasError):
    """An upstream's own error answer, passed on with its status."""

    code = "upstream_error"

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status_code = status


class ClientDisconnected(Exception):
    """The client went away; nothing more is sent to it."""


def upstream_error_message(body: bytes, status: int) -> str:
    """The message of an engine's error body (OpenAI or plain shapes)."""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        text = body[:500].decode("utf-8", "replace").strip()
        return text or f"the model server answered HTTP {status}"
    if isinstance(payload, dict):
        error = payload.get("error", payload)
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
        if isinstance(error, str):
            return error
    return f"the model server answered HTTP {status}"
