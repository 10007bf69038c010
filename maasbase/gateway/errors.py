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


class UpstreamTooLarge(UpstreamFailed):
    """The upstream's answer outgrew ``max_response_bytes``."""

    code = "upstream_response_too_large"
    retryable = False


class RequestTimeout(InvalidRequest):
    """The request's head or body arrived too slowly."""

    code = "request_timeout"
    status_code = 408


class TooManyConnections(Unavailable):
    code = "too_many_connections"


class HeadersTooLarge(InvalidRequest):
    code = "request_header_fields_too_large"
    status_code = 431


class RateLimited(TooManyRequests):
    code = "rate_limit_exceeded"


class QuotaExceeded(TooManyRequests):
    code = "insufficient_quota"


class ContextLengthExceeded(InvalidRequest):
    code = "context_length_exceeded"


class MethodNotAllowed(InvalidRequest):
    code = "method_not_allowed"
    status_code = 405


_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    408: "invalid_request_error",
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
    408: "invalid_request_error",
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
            "message": clip(exc.message, MESSAGE_CHARS),
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
            "message": clip(exc.message, MESSAGE_CHARS),
        },
    }
    body = json.dumps(payload).encode()
    return exc.status_code, _error_headers(exc, body), body


def openai_stream_error(exc: MaasError) -> bytes:
    """The SSE event that ends a stream which failed after its first byte."""
    payload = {
        "error": {
            "message": clip(exc.message, MESSAGE_CHARS),
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
            "message": clip(exc.message, MESSAGE_CHARS),
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


class ResponseAborted(Exception):
    """A response was cut short after it started: raised to an ASGI server so that it
    closes the connection instead of ending the body as if it were whole."""


ECHO_CHARS = 128  # of client input quoted in an error message
UPSTREAM_MESSAGE_CHARS = 1024  # of an engine's error message passed on
MESSAGE_CHARS = 2048  # of any error message the gateway answers


def clip(text: str, limit: int = ECHO_CHARS) -> str:
    """``text`` as an error message may quote it: at most ``limit`` characters, the
    rest replaced by an ellipsis."""
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


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
            return clip(str(error["message"]), UPSTREAM_MESSAGE_CHARS)
        if isinstance(error, str):
            return clip(error, UPSTREAM_MESSAGE_CHARS)
    return f"the model server answered HTTP {status}"
