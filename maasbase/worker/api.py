"""The worker's own small HTTP API; only callers holding its API secret may use it."""

from __future__ import annotations

import hmac
from collections.abc import Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from maasbase.common.hardware import HardwareReport


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
                body = {
                    "error": {
                        "message": "this worker API needs the server's credential",
                        "type": "unauthenticated",
                        "code": "unauthenticated",
                    }
                }
                await JSONResponse(body, status_code=401)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_worker_app(
    secret: Callable[[], str | None], hardware: Callable[[], HardwareReport | None]
) -> ASGIApp:
    """``secret`` and ``hardware`` are read on every call (they change on re-registration)."""

    async def healthz(_request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def get_hardware(_request: Request) -> Response:
        report = hardware()
        return JSONResponse(report.model_dump(mode="json") if report else None)

    app = Starlette(
        routes=[Route("/healthz", healthz), Route("/v1/hardware", get_hardware)],
    )
    return _RequireSecret(app, secret)
