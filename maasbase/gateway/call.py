"""One request as the gateway's handlers see it, whatever server carries it.

A ``Call`` reads the few request headers the gateway uses in one pass, times the
request (latency, time to first byte), and answers with JSON, raw bodies, streams or
errors in the API's shape. How the body arrives and how bytes leave is the server's
business: ``asgi.AsgiCall`` (under uvicorn, or mounted in the control plane) and
``native_call.NativeCall`` (the gateway's own HTTP/1.1 server) implement the transport
methods. Either one cancels the request's task when the client goes away and marks
the call ``disconnected``. A response that fails after it started is never ended as if
it were whole: a stream gets an error event, then the connection is cut (no last
chunk, or fewer bytes than its content-length), so that the client sees the truncation.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable
from enum import Enum
from typing import Any

import orjson

from maasbase.common.errors import MaasError
from maasbase.gateway.errors import (
    anthropic_error,
    anthropic_stream_error,
    openai_error,
    openai_stream_error,
)

Headers = list[tuple[bytes, bytes]]

JSON_HEADERS = [(b"content-type", b"application/json")]
FORWARDED = frozenset({
    b"content-type", b"accept", b"x-request-id", b"traceparent", b"anthropic-version",
    b"anthropic-beta",
})  # fmt: skip


class Style(Enum):
    OPENAI = "openai"
    ANTHROPIC = "anthropic"


class Call(ABC):
    __slots__ = (
        "affinity",
        "api_key",
        "content_type",
        "disconnected",
        "finished",
        "forward",
        "method",
        "path",
        "response_started",
        "sse",
        "start",
        "style",
        "task",
        "ttft",
    )

    def __init__(
        self,
        method: str,
        path: str,
        headers: Iterable[tuple[bytes, bytes]],
        affinity_header: bytes | None,
    ) -> None:
        self.method = method
        self.path = path
        self.start = time.perf_counter()
        self.style = Style.OPENAI
        self.response_started = False
        self.sse = False
        self.finished = False
        self.disconnected = False
        self.ttft: float | None = None
        self.task: asyncio.Task[Any] | None = None
        self.api_key: bytes | None = None
        self.affinity: bytes | None = None
        self.content_type = b""
        self.forward: Headers = []
        for name, value in headers:  # names are lowercase
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

    # transport: implemented by each server
    @abstractmethod
    async def read_body(self, limit: int) -> bytes:
        """The whole request body; ``RequestTooLarge`` past ``limit`` bytes,
        ``ClientDisconnected`` when the client went away."""

    @abstractmethod
    async def start_response(self, status: int, headers: Headers, *, sse: bool = False) -> None:
        """Send the status and headers; a body without content-length follows in parts."""

    @abstractmethod
    async def write(self, data: bytes) -> None:
        """Send one more part of the body (waits while the client reads slowly)."""

    @abstractmethod
    async def end(self, data: bytes = b"") -> None:
        """Send the last part of the body: the response is complete."""

    @abstractmethod
    async def abort(self, reason: str, data: bytes = b"") -> None:
        """Send ``data`` as one more part of the body, then cut the connection: the
        response is incomplete (``reason``) and the client must be able to tell."""

    def unstart(self) -> bool:
        """Take back a response start that has not reached the client yet (then an
        error answer may replace it); False when it has."""
        return False

    async def raw(self, status: int, headers: Headers, body: bytes) -> None:
        """A whole response with a known body."""
        await self.start_response(status, [*headers, (b"content-length", b"%d" % len(body))])
        await self.end(body)

    def close(self) -> None:
        """The handler is done with the call (answered, failed or cancelled)."""
        self.finished = True

    def swallow_cancel(self) -> bool:
        """True when the task was cancelled because this call's client went away."""
        if self.disconnected and self.task is not None:
            self.task.uncancel()
            return True
        return False

    # shared answers
    async def json(self, status: int, payload: Any, headers: Headers | None = None) -> None:
        body = orjson.dumps(payload)
        await self.raw(status, [*JSON_HEADERS, *(headers or [])], body)

    async def fail(self, exc: MaasError) -> None:
        """Answer with the error; a response already started gets it as a stream event
        (if it is a stream) and is then cut short."""
        if self.disconnected:
            return
        if self.response_started and not self.unstart():
            if not self.sse:
                await self.abort(exc.message)
            elif self.style is Style.ANTHROPIC:
                await self.abort(exc.message, anthropic_stream_error(exc))
            else:
                await self.abort(exc.message, openai_stream_error(exc))
            return
        shape = anthropic_error if self.style is Style.ANTHROPIC else openai_error
        status, headers, body = shape(exc)  # headers carry the content-length
        await self.start_response(status, headers)
        await self.end(body)
