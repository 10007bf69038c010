"""The ASGI application of the control plane."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from fastapi import FastAPI

from maasbase import __version__
from maasbase.server.api import (
    api_keys,
    auth,
    backends,
    catalog,
    cluster,
    docs,
    errors,
    gateway_sync,
    gateways,
    health,
    instance_logs,
    models,
    openapi,
    providers,
    usage,
    users,
    worker_sync,
    workers,
)
from maasbase.server.controllers.loop import PeriodicLoop
from maasbase.server.controllers.models import ModelController
from maasbase.server.controllers.worker_liveness import WorkerLiveness
from maasbase.server.metrics import HttpMetrics, MetricsMiddleware, new_registry
from maasbase.server.state import ServerState


def _controllers(
    state: ServerState,
) -> list[Callable[[asyncio.Event], Coroutine[Any, Any, None]]]:
    liveness = WorkerLiveness(state)
    return [
        PeriodicLoop("worker liveness", liveness.reconcile_once, liveness.interval).run,
        ModelController(state).run,
    ]


def create_app(state: ServerState, *, run_controllers: bool = True) -> FastAPI:
    """Build the app around an opened ``ServerState`` (see ``server.runtime``).

    ``run_controllers=False`` leaves the reconcile loops off (tests drive them by hand).
    """

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        stop = asyncio.Event()
        loops = _controllers(state) if run_controllers else []
        async with asyncio.TaskGroup() as group:
            for run in loops:
                group.create_task(run(stop))
            try:
                yield
            finally:
                stop.set()

    app = FastAPI(
        lifespan=lifespan,
        title="MaaS-Base",
        version=__version__,
        description="Management API of MaaS-Base. Authenticate with "
        "'Authorization: Bearer <API key or access token>'.",
        docs_url=None,
        redoc_url=None,
        openapi_url="/api/openapi.json",
    )
    app.state.maas = state
    registry = new_registry()
    app.state.metrics_registry = registry
    errors.install(app)
    openapi.install(app)
    for module in (
        health,
        auth,
        users,
        api_keys,
        worker_sync,
        workers,
        models,
        instance_logs,
        catalog,
        backends,
        providers,
        gateway_sync,
        gateways,
        cluster,
        usage,
        docs,
    ):
        app.include_router(module.router)
    app.add_middleware(MetricsMiddleware, metrics=HttpMetrics(registry))
    return app
