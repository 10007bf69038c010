"""The gateway's calls over ASGI: under uvicorn, or mounted in the control plane's app.

``AsgiCall`` reads the body from ``receive`` and answers through ``send``. ASGI tells
of a client that went away only through ``receive``, so a watch starts if the request
is still running ``WATCH_DELAY`` seconds after its body was read (a timer, not a task,
for the many short requests); on disconnect it cancels the request's task, which
closes the upstream connection. A response cut short raises ``ResponseAborted`` to the
ASGI server, which then closes the connection without ending the body.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from maasbase.gateway.call import Call, Headers
from maasbase.gateway.errors import ClientDisconnected, RequestTooLarge, ResponseAborted

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

WATCH_DELAY = 0.05


def scope_path(scope: Scope) -> str:
    path: str = scope["path"]
    root = scope.get("root_path")
    if root and not path.startswith(root):  # mounted by a router that strips its prefix
        path = root + path
    return path


class AsgiCall(Call):
    __slots__ = ("receive", "send", "timer", "watcher")

    def __init__(
        self, scope: Scope, receive: Receive, send: Send, affinity_header: bytes | None
    ) -> None:
        super().__init__(scope["method"], scope_path(scope), scope["headers"], affinity_header)
        self.receive = receive
        self.send = send
        self.timer: asyncio.TimerHandle | None = None
        self.watcher: asyncio.Task[None] | None = None

    async def read_body(self, limit: int) -> bytes:
        message = await self.receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        body: bytes = message.get("body", b"")
        if message.get("more_body"):
            parts = [body]
            size = len(body)
            while message.get("more_body"):
                message = await self.receive()
                if message["type"] == "http.disconnect":
                    raise ClientDisconnected
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    raise RequestTooLarge(f"the request body is larger than {limit} bytes")
                parts.append(chunk)
            body = b"".join(parts)
        if len(body) > limit:
            raise RequestTooLarge(f"the request body is larger than {limit} bytes")
        self._arm_watch()
        return body

    async def start_response(self, status: int, headers: Headers, *, sse: bool = False) -> None:
        self.response_started = True
        self.sse = sse
        await self.send({"type": "http.response.start", "status": status, "headers": headers})

    async def write(self, data: bytes) -> None:
        await self.send({"type": "http.response.body", "body": data, "more_body": True})

    async def end(self, data: bytes = b"") -> None:
        await self.send({"type": "http.response.body", "body": data, "more_body": False})

    async def abort(self, reason: str, data: bytes = b"") -> None:
        if data:
            await self.send({"type": "http.response.body", "body": data, "more_body": True})
        raise ResponseAborted(f"{self.method} {self.path}: the response was cut short: {reason}")

    def close(self) -> None:
        self.finished = True
        if self.timer is not None:
            self.timer.cancel()
        if self.watcher is not None:
            self.watcher.cancel()

    # disconnect watch
    def _arm_watch(self) -> None:
        self.task = asyncio.current_task()
        self.timer = asyncio.get_running_loop().call_later(WATCH_DELAY, self._start_watch)

    def _start_watch(self) -> None:
        self.timer = None
        if not self.finished:
            self.watcher = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        while (await self.receive())["type"] != "http.disconnect":
            pass
        if not self.finished and self.task is not None:
            self.disconnected = True
            self.task.cancel()
