"""ASGI plumbing for one request: headers read once, body, responses, disconnects.

A ``Call`` reads the few request headers the gateway uses in one pass, reads the body,
sends JSON and error responses in the API's shape, and watches for the client going
away. The watch starts only if the request is still running ``WATCH_DELAY`` seconds
after its body was read (a timer, not a task, for the many short requests); on
disconnect it cancels the request's task, which closes the upstream connection.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, MutableMapping
from enum import Enum
from typing import Any

from maasbase.common.errors import MaasError
from maasbase.gateway.errors import (
    ClientDisconnected,
    RequestTooLarge,
    anthropic_error,
    anthropic_stream_error,
    openai_error,
    openai_stream_error,
)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

WATCH_DELAY = 0.05
JSON_HEADERS = [(b"content-type", b"application/json")]
FORWARDED = frozenset({b"content-type", b"accept", b"x-request-id", b"traceparent"})


class Style(Enum):
    OPENAI = "openai"
    ANTHROPIC = "anthropic"


class Call:
    __slots__ = (
        "affinity",
        "api_key",
        "content_type",
        "disconnected",
        "finished",
        "forward",
        "receive",
        "response_started",
        "scope",
        "send",
        "sse",
        "start",
        "style",
        "task",
        "timer",
        "ttft",
        "watcher",
    )

    def __init__(
        self, scope: Scope, receive: Receive, send: Send, affinity_header: bytes | None
    ) -> None:
        self.scope = scope
        self.receive = receive
        self.send = send
        self.start = time.perf_counter()
        self.style = Style.OPENAI
        self.response_started = False
        self.sse = False
        self.finished = False
        self.disconnected = False
        self.ttft: float | None = None
        self.task: asyncio.Task[Any] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.watcher: asyncio.Task[None] | None = None
        self.api_key: bytes | None = None
        self.affinity: bytes | None = None
        self.content_type = b""
        self.forward: Headers = []
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, token = value.partition(b" ")
                if scheme.lower() == b"bearer" and token.strip():
                    self.api_key = token.strip()
            elif name == b"x-api-key" and self.api_key is None:
                self.api_key = value.strip()
            elif name == affinity_header:
                self.affinity = value
            if name in FORWARDED:
                self.forward.append((name, value))
                if name == b"content-type":
                    self.content_type = value

    @property
    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.start) * 1000

    def first_byte(self) -> None:
        if self.ttft is None:
            self.ttft = self.elapsed_ms

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

    def close(self) -> None:
        self.finished = True
        if self.timer is not None:
            self.timer.cancel()
        if self.watcher is not None:
            self.watcher.cancel()

    def swallow_cancel(self) -> bool:
        """True when the task was cancelled by this call's own disconnect watch."""
        if self.disconnected and self.task is not None:
            self.task.uncancel()
            return True
        return False

    # responses
    async def start_response(self, status: int, headers: Headers, *, sse: bool = False) -> None:
        self.response_started = True
        self.sse = sse
        await self.send({"type": "http.response.start", "status": status, "headers": headers})

    async def json(self, status: int, payload: Any, headers: Headers | None = None) -> None:
        body = json.dumps(payload, separators=(",", ":")).encode()
        await self.raw(status, [*JSON_HEADERS, *(headers or [])], body)

    async def raw(self, status: int, headers: Headers, body: bytes) -> None:
        headers = [*headers, (b"content-length", str(len(body)).encode())]
        await self.start_response(status, headers)
        await self.send({"type": "http.response.body", "body": body})

    async def fail(self, exc: MaasError) -> None:
        """Answer with the error, or end a stream that already started with it."""
        if self.disconnected:
            return
        if self.response_started:
            if self.sse:
                event = (
                    anthropic_stream_error(exc)
                    if self.style is Style.ANTHROPIC
                    else openai_stream_error(exc)
                )
                await self.send({"type": "http.response.body", "body": event, "more_body": False})
            else:
                await self.send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        shape = anthropic_error if self.style is Style.ANTHROPIC else openai_error
        status, headers, body = shape(exc)
        self.response_started = True
        await self.send({"type": "http.response.start", "status": status, "headers": headers})
        await self.send({"type": "http.response.body", "body": body})
