"""The worker's own small HTTP API; only callers holding its API secret may use it."""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Callable
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from maasbase.common.hardware import HardwareReport
from maasbase.worker.serving import logs


def _error(status: int, message: str) -> JSONResponse:
    code = {400: "invalid_request", 401: "unauthenticated", 404: "not_found"}.get(status, "error")
    return JSONResponse(
        {"error": {"message": message, "type": code, "code": code}}, status_code=status
    )


class _RequireSecret:
    def __init__(self, app: ASGIApp, secret: Callable[[], str | None]) -> None:
        self.app = app
        self.secret = secret

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            expected = self.secret()
            headers = dict(scope["headers"])
            presented = headers.get(b"authorization", b"").decode(errors="replace")
            token = presented.removeprefix("Bearer ").strip()
            if not expected or not hmac.compare_digest(token.encode(), expected.encode()):
                response = _error(401, "this worker API needs the server's credential")
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_worker_app(
    secret: Callable[[], str | None],
    hardware: Callable[[], HardwareReport | None],
    log_of: Callable[[int], Path | None],
) -> ASGIApp:
    """``secret`` and ``hardware`` are read on every call (they change on re-registration);
    ``log_of`` finds the log file of an instance this worker runs."""

    async def healthz(_request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def instance_logs(request: Request) -> Response:
        instance_id = int(request.path_params["instance_id"])
        path = log_of(instance_id)
        if path is None:
            return _error(404, f"instance {instance_id} does not run on this worker")
        try:
            lines = max(0, min(int(request.query_params.get("tail", "100")), 100_000))
        except ValueError:
            return _error(400, "tail must be a number of lines")
        if request.query_params.get("follow", "false").lower() in ("1", "true", "yes"):
            return StreamingResponse(
                logs.follow(path, start_lines=lines), media_type="text/plain; charset=utf-8"
            )
        text = await asyncio.to_thread(logs.tail, path, lines)
        return PlainTextResponse(text + ("\n" if text else ""))

    async def get_hardware(_request: Request) -> Response:
        report = hardware()
        return JSONResponse(report.model_dump(mode="json") if report else None)

    app = Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/v1/hardware", get_hardware),
            Route("/v1/instances/{instance_id:int}/logs", instance_logs),
        ],
    )
    return _RequireSecret(app, secret)
