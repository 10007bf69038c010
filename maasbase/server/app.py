"""The ASGI application of the control plane."""

from __future__ import annotations

from fastapi import FastAPI

from maasbase import __version__
from maasbase.server.api import api_keys, auth, errors, health, users
from maasbase.server.metrics import HttpMetrics, MetricsMiddleware, new_registry
from maasbase.server.state import ServerState


def create_app(state: ServerState) -> FastAPI:
    """Build the app around an opened ``ServerState`` (see ``server.runtime``)."""
    app = FastAPI(
        title="MaaS-Base",
        version=__version__,
        description="Management API of MaaS-Base. Authenticate with "
        "'Authorization: Bearer <API key or access token>'.",
        docs_url="/api/docs",
        redoc_url=None,
        openapi_url="/api/openapi.json",
    )
    app.state.maas = state
    registry = new_registry()
    app.state.metrics_registry = registry
    errors.install(app)
    for module in (health, auth, users, api_keys):
        app.include_router(module.router)
    app.add_middleware(MetricsMiddleware, metrics=HttpMetrics(registry))
    return app
