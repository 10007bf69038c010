"""The gateway's own HTTP/1.1 server: asyncio protocols and httptools, no ASGI layer.

A standalone gateway spends most of its time in the server that carries it; under
uvicorn, each request also pays for an ASGI scope, message dicts and the general
protocol machinery, which halves what one core can proxy. ``GatewayServer`` parses
requests with httptools (the parser uvicorn uses) straight from ``data_received``
and hands each complete request to ``GatewayApp.handle`` as a ``NativeCall``, whose
answers go to the socket with one write per response (or per stream part).

HTTP/1.1 as clients use it: keep-alive with an idle timeout, pipelined requests
(answered in order), ``Expect: 100-continue``, chunked responses for streams (or
close-delimited ones for HTTP/1.0), HEAD, write back-pressure, and body and header
size limits answered with 413/431 in the OpenAI error shape. A client that goes
away cancels its request's task, which closes the upstream connection. ``stop()``
stops accepting, lets running requests finish for ``graceful_timeout`` seconds and
then cuts the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import http
import logging
import socket
from collections import deque
from typing import TYPE_CHECKING, cast
from urllib.parse import unquote

import httptools

from maasbase.common.errors import InvalidRequest, MaasError
from maasbase.gateway.call import Call, Headers
from maasbase.gateway.errors import (
    ClientDisconnected,
    HeadersTooLarge,
    RequestTooLarge,
    openai_error,
)

if TYPE_CHECKING:
    from maasbase.gateway.app import GatewayApp

logger = logging.getLogger("maasbase.gateway.server")

MAX_HEADER_BYTES = 64 * 1024
# Bytes read before the headers end, after which a request is refused whatever it is:
# above headers plus one socket read of body (a read brings at most 256 KiB).
HEAD_READ_LIMIT = 1024 * 1024
TOO_LARGE = f"the request line and headers are larger than {MAX_HEADER_BYTES} bytes"
MAX_PIPELINED = 16  # requests parsed ahead of their turn before reading pauses
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
LAST_CHUNK = b"0\r\n\r\n"


@functools.cache
def status_line(status: int) -> bytes:
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = ""
    return f"HTTP/1.1 {status} {phrase}\r\n".encode("latin-1")


def head_lines(status: int, headers: Headers) -> list[bytes]:
    """The status line and header lines of a response, without the closing blank line."""
    parts = [status_line(status)]
    for name, value in headers:
        parts += (name, b": ", value, b"\r\n")
    return parts


@functools.lru_cache(maxsize=256)
def request_path(url: bytes) -> str:
    """The decoded path of a request target (origin or absolute form)."""
    if not url.startswith(b"/"):
        try:
            url = httptools.parse_url(url).path or b"/"
        except httptools.HttpParserInvalidURLError:
            return ""
    path = url.partition(b"?")[0].decode("latin-1")
    return unquote(path) if "%" in path else path


class NativeCall(Call):
    __slots__ = (
        "_body", "_chunked", "_conn", "_head", "_head_only", "complete", "http11", "keep_alive",
    )  # fmt: skip

    def __init__(
        self,
        conn: HttpConnection,
        method: str,
        path: str,
        headers: Headers,
        body: bytes,
        *,
        http11: bool,
        keep_alive: bool,
        affinity_header: bytes | None,
    ) -> None:
        super().__init__(method, path, headers, affinity_header)
        self.http11 = http11
        self._conn = conn
        self._body = body
        self._head = b""
        self._chunked = False
        self._head_only = method == "HEAD"
        self.keep_alive = keep_alive
        self.complete = False  # the whole response was handed to the socket

    async def read_body(self, limit: int) -> bytes:
        if len(self._body) > limit:
            raise RequestTooLarge(f"the request body is larger than {limit} bytes")
        return self._body

    async def start_response(self, status: int, headers: Headers, *, sse: bool = False) -> None:
        self.response_started = True
        self.sse = sse
        parts = head_lines(status, headers)
        sized = any(name == b"content-length" for name, _ in headers)
        if not sized and not self._head_only:
            if self.http11:
                parts.append(b"transfer-encoding: chunked\r\n")
                self._chunked = True
            else:
                self.keep_alive = False  # the end of the body is the end of the connection
        if not self.keep_alive:
            parts.append(b"connection: close\r\n")
        parts.append(b"\r\n")
        self._head = b"".join(parts)  # sent with the first part of the body

    async def raw(self, status: int, headers: Headers, body: bytes) -> None:
        """A whole response with a known body, in one write."""
        self.response_started = True
        parts = head_lines(status, headers)
        if not self.keep_alive:
            parts.append(b"connection: close\r\n")
        parts += (b"content-length: %d\r\n\r\n" % len(body), b"" if self._head_only else body)
        self.complete = True
        self._conn.finish(self, b"".join(parts))

    def _frame(self, data: bytes) -> bytes:
        if self._head_only or not data:
            return b""
        return b"%x\r\n%b\r\n" % (len(data), data) if self._chunked else data

    async def write(self, data: bytes) -> None:
        out = self._head + self._frame(data)
        self._head = b""
        if out:
            await self._conn.send(out)

    async def end(self, data: bytes = b"") -> None:
        out = self._head + self._frame(data)
        if self._chunked and not self._head_only:
            out += LAST_CHUNK
        self._head = b""
        self.complete = True
        self._conn.finish(self, out)


class HttpConnection(asyncio.Protocol):
    """One client connection: parses requests, answers them one at a time, in order."""

    def __init__(self, server: GatewayServer) -> None:
        self.server = server
        self.app = server.app
        self.loop = asyncio.get_running_loop()
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.call: NativeCall | None = None  # the request whose response is not complete
        self.ready: deque[NativeCall] = deque()  # pipelined requests waiting for their turn
        self.lost = False
        self.unparsed = False  # nothing more is read from this client (an upgrade or an error)
        self.rejection = b""  # an error answer waiting for the responses before it
        self.read_paused = False
        self.write_paused = False
        self.drain: asyncio.Future[None] | None = None
        self.idle_since: float | None = None  # between requests, since when
        self._url = b""
        self._headers: Headers = []
        self._in_head = True  # between the start of a request and the end of its headers
        self._head_bytes = 0
        self._body: list[bytes] = []
        self._body_size = 0

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.server.connections.add(self)
        self.idle_since = self.loop.time()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.ready.clear()
        self.server.closed(self)
        call = self.call
        if call is not None and not call.complete and call.task is not None:
            call.disconnected = True
            call.task.cancel()
        self._wake_writer()

    def data_received(self, data: bytes) -> None:
        self._feed(data)
        if self.call is None:
            self._start_next()
        elif len(self.ready) >= MAX_PIPELINED and self.transport is not None:
            self.read_paused = True
            self.transport.pause_reading()

    def eof_received(self) -> bool | None:
        return None  # close; a client that half-closes is treated as gone

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self._wake_writer()

    # parsing
    def _feed(self, data: bytes) -> None:
        if self.unparsed:
            return
        if self._in_head:  # bound what a request whose headers never end can hold
            self._head_bytes += len(data)
            if self._head_bytes > HEAD_READ_LIMIT:
                self._reject(HeadersTooLarge(TOO_LARGE))
                return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.unparsed = True  # answered as a plain request, then the connection closes
            last = self.ready[-1] if self.ready else self.call
            if last is not None:
                last.keep_alive = False
        except httptools.HttpParserCallbackError as exc:
            error = exc.__context__
            if not isinstance(error, MaasError):
                raise
            self._reject(error)
        except httptools.HttpParserError as exc:
            self._reject(InvalidRequest(f"malformed HTTP request ({exc})"))

    def on_message_begin(self) -> None:
        self.idle_since = None
        self._in_head = True
        self._head_bytes = 0
        self._url = b""
        self._headers = []
        self._body = []
        self._body_size = 0

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self._in_head = False
        size = len(self._url)
        length = expect = b""
        for name, value in self._headers:
            size += len(name) + len(value)
            if name == b"content-length":
                length = value
            elif name == b"expect":
                expect = value
        if size > MAX_HEADER_BYTES:
            raise HeadersTooLarge(TOO_LARGE)
        limit = self.app.config.max_body_bytes
        if length.isdigit() and int(length) > limit:
            raise RequestTooLarge(f"the request body is larger than {limit} bytes")
        if expect.lower() == b"100-continue" and self.transport is not None:
            self.transport.write(CONTINUE)

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        limit = self.app.config.max_body_bytes
        if self._body_size > limit:
            raise RequestTooLarge(f"the request body is larger than {limit} bytes")
        self._body.append(body)

    def on_message_complete(self) -> None:
        parser = self.parser
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        call = NativeCall(
            self,
            parser.get_method().decode("latin-1"),
            request_path(self._url),
            self._headers,
            body,
            http11=parser.get_http_version() == "1.1",
            keep_alive=parser.should_keep_alive() and not self.server.stopping,
            affinity_header=self.app.affinity_header,
        )
        self.ready.append(call)

    def _start_next(self) -> None:
        """Run the next request received, or wait idle for one."""
        if self.ready and not self.lost:
            call = self.call = self.ready.popleft()
            task = call.task = self.loop.create_task(self.app.handle(call))
            task.add_done_callback(functools.partial(self._handled, call))
            if self.read_paused and len(self.ready) < MAX_PIPELINED and self.transport:
                self.read_paused = False
                self.transport.resume_reading()
        elif self.rejection:
            self._send_rejection()
        elif not self.lost:
            self.idle_since = self.loop.time()
            if self.server.stopping:
                self.shutdown()

    def _reject(self, error: MaasError) -> None:
        """Answer a request the parser refused (after the answers to the requests before
        it), and close."""
        status, headers, body = openai_error(error)
        head = head_lines(status, headers)
        self.rejection = b"".join([*head, b"connection: close\r\n\r\n", body])
        self.unparsed = True
        if self.call is None and not self.ready:
            self._send_rejection()

    def _send_rejection(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(self.rejection)
            self.transport.close()

    # answering
    async def send(self, data: bytes) -> None:
        transport = self.transport
        if self.lost or transport is None or transport.is_closing():
            raise ClientDisconnected
        transport.write(data)
        if self.write_paused:
            self.drain = self.loop.create_future()
            await self.drain
            if self.lost:
                raise ClientDisconnected

    def _wake_writer(self) -> None:
        drain, self.drain = self.drain, None
        if drain is not None and not drain.done():
            drain.set_result(None)

    def finish(self, call: NativeCall, data: bytes) -> None:
        """The last bytes of ``call``'s response: then the next request may run."""
        transport = self.transport
        if self.lost or transport is None or transport.is_closing():
            return
        if data:
            transport.write(data)
        if not call.keep_alive:
            transport.close()
        elif self.call is call:
            self.call = None
            self._start_next()

    def _handled(self, call: NativeCall, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            logger.error("gateway request failed", exc_info=task.exception())
        if not call.complete and self.transport is not None:
            self.transport.close()  # the response is cut short: nothing else can follow
        if self.call is call:
            self.call = None

    def close_if_idle(self, since: float) -> None:
        """Close when no request has started since ``since`` (keep-alive expiry)."""
        idle = self.idle_since
        quiet = idle is not None and idle <= since and self.call is None and not self.ready
        if quiet and self.transport is not None:
            self.transport.close()

    def shutdown(self) -> None:
        """Close now if between requests; otherwise after the current response."""
        self.ready.clear()
        if self.call is None:
            if self.transport is not None:
                self.transport.close()
        else:
            self.call.keep_alive = False

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class GatewayServer:
    """Serves a ``GatewayApp`` on a listening socket until ``stop()``."""

    def __init__(
        self, app: GatewayApp, *, keep_alive: float = 75.0, graceful_timeout: float = 30.0
    ) -> None:
        self.app = app
        self.keep_alive = keep_alive
        self.graceful_timeout = graceful_timeout
        self.connections: set[HttpConnection] = set()
        self.started = asyncio.Event()
        self.stopping = False
        self._stop = asyncio.Event()
        self._drained = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def serve(self, sock: socket.socket) -> None:
        """Start the app, serve until ``stop()``, shut down gracefully, close the app."""
        loop = asyncio.get_running_loop()
        async with contextlib.AsyncExitStack() as stack:  # no await in a finally: compiled.py
            await self.app.start()
            stack.push_async_callback(self.app.aclose)
            listener = await loop.create_server(
                lambda: HttpConnection(self), sock=sock, backlog=4096
            )
            sweeper = loop.create_task(self._close_idle(), name="gateway-keep-alive")
            stack.push_async_callback(self._shut_down, listener, sweeper)
            self.started.set()
            await self._stop.wait()

    async def _shut_down(self, listener: asyncio.Server, sweeper: asyncio.Task[None]) -> None:
        sweeper.cancel()
        listener.close()
        await self._drain_connections()

    async def _close_idle(self) -> None:
        """Close connections idle for ``keep_alive`` seconds (one sweep for all of them,
        instead of a timer per request)."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(min(self.keep_alive / 2, 5.0))
            since = loop.time() - self.keep_alive
            for conn in list(self.connections):
                conn.close_if_idle(since)

    def closed(self, conn: HttpConnection) -> None:
        self.connections.discard(conn)
        if not self.connections:
            self._drained.set()

    async def _drain_connections(self) -> None:
        self.stopping = True
        if not self.connections:
            return
        self._drained.clear()
        for conn in list(self.connections):
            conn.shutdown()
        if await self._drained_within(self.graceful_timeout):
            return
        logger.warning("cutting %d connections still open after %.0f s",
                       len(self.connections), self.graceful_timeout)  # fmt: skip
        for conn in list(self.connections):
            conn.abort()
        await self._drained_within(1)

    async def _drained_within(self, seconds: float) -> bool:
        try:
            async with asyncio.timeout(seconds):
                await self._drained.wait()
        except TimeoutError:
            return False
        return True
