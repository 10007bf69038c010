"""The one place where errors become HTTP responses (all in the same JSON shape)."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from maasbase.common.errors import MaasError, TooManyRequests
from maasbase.server.schemas.common import problems

logger = logging.getLogger(__name__)

_STATUS_CODES = {
    400: "invalid_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    429: "rate_limited",
}


def error_response(
    status: int,
    message: str,
    code: str,
    *,
    details: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {"message": message, "type": code, "code": code}
    if details:
        body["details"] = details
    return JSONResponse({"error": body}, status_code=status, headers=headers)


async def _maas_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, MaasError)
    headers: dict[str, str] = {}
    if isinstance(exc, TooManyRequests):
        headers["Retry-After"] = str(max(1, round(exc.retry_after + 0.499)))
    if exc.status_code == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return error_response(
        exc.status_code, exc.message, exc.code, details=exc.details or None, headers=headers
    )


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    """Request validation failures answer 400 (not FastAPI's 422), like every other
    invalid request; the OpenAPI schema says so (``api.openapi``)."""
    assert isinstance(exc, RequestValidationError)
    found = problems(list(exc.errors()))
    message = "invalid request: " + "; ".join(found) if found else "invalid request"
    return error_response(400, message, "invalid_request", details={"errors": found})


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _STATUS_CODES.get(exc.status_code, "error")
    message = str(exc.detail)
    if exc.status_code == 404 and message == "Not Found":
        message = "no such endpoint; see /api/docs for the API"
    return error_response(exc.status_code, message, code, headers=dict(exc.headers or {}))


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    incident = uuid.uuid4().hex[:12]
    logger.error(
        "unhandled error %s on %s %s", incident, request.method, request.url.path, exc_info=exc
    )
    return error_response(
        500,
        f"internal error (incident {incident}); the server log has the details",
        "internal_error",
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(MaasError, _maas_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
