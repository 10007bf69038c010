"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from sqlalchemy import text

from maasbase.server.api.deps import Session, State, get_principal, require_management
from maasbase.server.api.errors import error_response
from maasbase.server.api.openapi import error_responses

router = APIRouter(tags=["health"])

READY_TIMEOUT_SECONDS = 3.0


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", response_model=None, responses=error_responses(503))
async def readyz(state: State) -> dict[str, str] | Response:
    """The database answers."""
    try:
        async with asyncio.timeout(READY_TIMEOUT_SECONDS):
            async with state.engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
    except Exception as exc:  # any failure means "not ready"
        return error_response(503, f"database not reachable: {type(exc).__name__}", "unavailable")
    return {"status": "ok"}


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}, **error_responses(401, 403)},
)
async def metrics(request: Request, state: State, session: Session) -> Response:
    """Prometheus text format. Needs a management credential unless ``metrics_public``."""
    if not state.settings.metrics_public:
        await require_management(await get_principal(request, state, session))
    registry: CollectorRegistry = request.app.state.metrics_registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
