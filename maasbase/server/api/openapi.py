"""The OpenAPI schema says what the API really answers.

FastAPI documents 422 for invalid input; this API answers 400 (``api.errors``), like
every other invalid request. Every authenticated operation may answer 401 and 403, and
every operation whose path names a resource 404; those are added here from the route
table, so a new route is documented without extra code. Codes a route raises itself
(409, 429, 503) are declared on the route with ``error_responses``.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from maasbase.server.schemas.common import ErrorResponse

_DESCRIPTIONS = {
    400: "Invalid request; the message names the field.",
    401: "No credentials, or credentials that are not valid (any more).",
    403: "The credentials are valid but do not allow this.",
    404: "No such resource (or not visible to the caller).",
    409: "Conflicts with the current state; the message says how to resolve it.",
    429: "Too many attempts; retry after the Retry-After header's seconds.",
    503: "A component this request needs is not reachable.",
}
_ERROR_REF = {"$ref": "#/components/schemas/ErrorResponse"}
_FASTAPI_VALIDATION_SCHEMAS = ("HTTPValidationError", "ValidationError")


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route that answers ``codes`` besides the automatic ones."""
    return {code: {"model": ErrorResponse, "description": _DESCRIPTIONS[code]} for code in codes}


def _error(code: int) -> dict[str, Any]:
    return {
        "description": _DESCRIPTIONS[code],
        "content": {"application/json": {"schema": _ERROR_REF}},
    }


def _document_errors(path: str, operation: dict[str, Any]) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    responses.pop("422", None)
    codes = []
    if operation.get("parameters") or operation.get("requestBody"):
        codes.append(400)
    if operation.get("security"):
        codes += [401, 403]
    if "{" in path:
        codes.append(404)
    for code in codes:
        responses.setdefault(str(code), _error(code))


def build_schema(app: FastAPI) -> dict[str, Any]:
    schema = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
    )
    for path, item in schema.get("paths", {}).items():
        for operation in item.values():
            _document_errors(path, operation)
    schemas = schema.setdefault("components", {}).setdefault("schemas", {})
    for name in _FASTAPI_VALIDATION_SCHEMAS:
        schemas.pop(name, None)
    error_schema = ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(error_schema.pop("$defs", {}))
    schemas["ErrorResponse"] = error_schema
    return schema


def install(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build_schema(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
