"""The gateway's own HTTP/1.1 server: asyncio protocols and httptools, no ASGI layer.

A standalone gateway spends most of its time in the server that carries it; under
uvicorn, each request also pays for an ASGI scope, message dicts and the general
protocol machinery, which halves what one core can proxy. ``GatewayServer`` parses
requests with httptools (the parser uvicorn uses) straight from ``data_received``
and hands each complete request to ``GatewayApp.handle`` as a ``NativeCall``, whose
answers go to the socket with one write per response (or per stream part).

HTTP/1.1 as clients use it: keep-alive with an idle timeout, pipelined requests
(answered in order), ``Expect: 100-continue``, chunked responses for streams (or
close-delimited ones for HTTP/1.0; ``native_call`` frames the answers), HEAD, write
back-pressure, and body (per route)
and header size limits answered with 413/431 in the OpenAI error shape. A client that
goes away cancels its request's task, which closes the upstream connection. ``stop()``
stops accepting, lets running requests finish for ``graceful_timeout`` seconds and
then cuts the rest.

At its edges, against clients that are slow or many on purpose: while a request is
answered, reading stops once the head of the next one is in (at most one request body
is read ahead, and its ``100 Continue`` waits for its turn); a request's head must
arrive within ``header_timeout`` seconds and its body at ``min_body_rate`` bytes a
second after a grace of ``body_timeout`` seconds, or it is answered 408 and the
connection closes (one periodic sweep checks these deadlines and keep-alive expiry for
every connection: no timer per request); past ``max_connections`` a new connection
gets a 503 and is closed. A response whose upstream fails mid-body is cut: the
connection closes without the last chunk (or before the content-length).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
from collections import deque
from typing import TYPE_CHECKING, cast
from urllib.parse import unquote

import httptools

from maasbase.common.errors import InvalidRequest, MaasError
from maasbase.gateway.call import Headers
from maasbase.gateway.errors import (
    ClientDisconnected,
    HeadersTooLarge,
    RequestTimeout,
    RequestTooLarge,
    TooManyConnections,
    clip,
)
from maasbase.gateway.native_call import NativeCall, refusal

if TYPE_CHECKING:
    from maasbase.gateway.app import GatewayApp

logger = logging.getLogger("maasbase.gateway.server")

MAX_HEADER_BYTES = 64 * 1024
# Bytes read before the headers end, after which a request is refused whatever it is:
# above headers plus one socket read of body (a read brings at most 256 KiB).
HEAD_READ_LIMIT = 1024 * 1024
TOO_LARGE = f"the request line and headers are larger than {MAX_HEADER_BYTES} bytes"
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
LINGER = 1.0  # seconds a refused connection stays open for its 503 to be read
SWEEP_MAX = 1.0  # seconds between deadline sweeps at most

# What the sweep checks on a connection, since ``HttpConnection.since``.
QUIET = 0  # nothing: a request is being answered, or waits for its turn
IDLE = 1  # keep-alive expiry, between requests
HEAD = 2  # the header deadline, while a request's head arrives
BODY = 3  # the body deadline, while its body arrives
CLOSING = 4  # a refused connection, closed after LINGER seconds


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
        self.phase = IDLE  # what the sweep checks (see the constants)
        self.since = 0.0  # when the phase began
        self.continue_due = False  # a 100 Continue waits for this request's turn
        self._in_message = False  # between the first byte of a request and its end
        self._method = ""
        self._path = ""
        self._limit = 0  # the body limit of the request being read
        self._url = b""
        self._headers: Headers = []
        self._in_head = True  # between the start of a request and the end of its headers
        self._head_bytes = 0
        self._body: list[bytes] = []
        self._body_size = 0

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        server = self.server
        full = len(server.connections) >= server.max_connections
        server.connections.add(self)
        self.since = self.loop.time()
        if full:
            self._refuse()

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
        if self.unparsed:
            return
        self._feed(data)
        if self.call is None:
            self._start_next()

    def eof_received(self) -> bool | None:
        return None  # close; a client that half-closes is treated as gone

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self._wake_writer()

    # parsing
    def _feed(self, data: bytes) -> None:
        if self._in_head:  # bound what a request whose headers never end can hold
            self._head_bytes += len(data)
            if self._head_bytes > HEAD_READ_LIMIT:
                self._reject(HeadersTooLarge(TOO_LARGE))
                return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.unparsed = True  # answered as a plain request, then the connection closes
            self.phase = QUIET
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
        self._in_message = True
        self.phase = HEAD
        self.since = self.loop.time()
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
        method = self._method = self.parser.get_method().decode("latin-1")
        path = self._path = request_path(self._url)
        limit = self._limit = self.app.body_limit(method, path)
        if length.isdigit() and int(length) > limit:
            raise RequestTooLarge(too_large(method, path, limit))
        expects = expect.lower() == b"100-continue"
        if self.call is not None or self.ready:  # pipelined behind an unfinished answer
            self.phase = QUIET
            self.continue_due = expects
            self._pause_reading()  # its body, at most, is read before its turn
        else:
            self.phase = BODY
            self.since = self.loop.time()
            if expects and self.transport is not None:
                self.transport.write(CONTINUE)

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size > self._limit:
            raise RequestTooLarge(too_large(self._method, self._path, self._limit))
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._in_message = self.continue_due = False
        self.phase = QUIET
        parser = self.parser
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        call = NativeCall(
            self,
            self._method,
            self._path,
            self._headers,
            body,
            http11=parser.get_http_version() == "1.1",
            keep_alive=parser.should_keep_alive() and not self.server.stopping,
            affinity_header=self.app.affinity_header,
        )
        self.ready.append(call)

    def _pause_reading(self) -> None:
        if not self.read_paused and self.transport is not None:
            self.read_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        self.read_paused = False
        self.since = self.loop.time()  # the deadlines did not run while reading was paused
        if self.transport is not None:
            self.transport.resume_reading()

    def _start_next(self) -> None:
        """Run the next request received, or wait for one (or for the rest of one)."""
        if self.ready and not self.lost:
            call = self.call = self.ready.popleft()
            task = call.task = self.loop.create_task(self.app.handle(call))
            task.add_done_callback(functools.partial(self._handled, call))
            if self.read_paused and not self.ready and not self._in_message:
                self._resume_reading()
        elif self.rejection:
            self._send_rejection()
        elif not self.lost:
            if self.read_paused:
                self._resume_reading()
            if not self._in_message:
                self.phase = IDLE
                self.since = self.loop.time()
            elif self.phase == QUIET:  # its head came early: now its body may follow
                self.phase = BODY
                self.since = self.loop.time()
                if self.continue_due and self.transport is not None:
                    self.continue_due = False
                    self.transport.write(CONTINUE)
            if self.server.stopping:
                self.shutdown()

    def _reject(self, error: MaasError) -> None:
        """Answer a request the parser refused (after the answers to the requests before
        it), and close."""
        self.rejection = refusal(error)
        self.unparsed = True
        self.phase = QUIET
        if self.call is None and not self.ready:
            self._send_rejection()

    def _send_rejection(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(self.rejection)
            self.transport.close()

    def _refuse(self) -> None:
        """Answer 503 at once and close soon: the process holds its maximum of connections."""
        self.unparsed = True
        self.phase = CLOSING
        self.server.refused += 1
        transport = self.transport
        if transport is not None:
            transport.write(self.server.full_answer)
            if transport.can_write_eof():
                transport.write_eof()  # what the client sent is read and dropped until it closes

    # deadlines
    def expire(self, now: float) -> None:
        """Close the connection, or answer 408, when its phase outlived its deadline."""
        phase = self.phase
        if phase == QUIET or self.read_paused:
            return
        server = self.server
        elapsed = now - self.since
        if phase == IDLE:
            if elapsed > server.keep_alive and self.transport is not None:
                self.transport.close()
        elif phase == HEAD:
            if elapsed > server.header_timeout:
                message = (
                    f"the request line and headers took longer than {server.header_timeout:g} s"
                    " to arrive; send them at once"
                )
                self._reject(RequestTimeout(message))
        elif phase == BODY:
            if elapsed > server.body_timeout + self._body_size / server.min_body_rate:
                message = (
                    f"the request body arrived slower than {server.min_body_rate} bytes/s; "
                    "send it faster or retry on a better connection"
                )
                self._reject(RequestTimeout(message))
        elif elapsed > LINGER and self.transport is not None:  # CLOSING
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

    def cut(self, data: bytes, *, reset: bool) -> None:
        """The last bytes of a response that is not whole, then the end of the connection:
        closed (or reset, when nothing else would tell the client of the cut)."""
        transport = self.transport
        if self.lost or transport is None or transport.is_closing():
            return
        self.ready.clear()
        if data:
            transport.write(data)
        if reset:
            transport.abort()
        else:
            transport.close()

    def _handled(self, call: NativeCall, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            logger.error("gateway request failed", exc_info=task.exception())
        if not call.complete and self.transport is not None:
            self.transport.close()  # the response is cut short: nothing else can follow
        if self.call is call:
            self.call = None

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


def too_large(method: str, path: str, limit: int) -> str:
    if not limit:
        return f"{method} {clip(path)} takes no request body"
    return f"the request body is larger than {limit} bytes, the limit of {method} {clip(path)}"


class GatewayServer:
    """Serves a ``GatewayApp`` on a listening socket until ``stop()``."""

    def __init__(
        self, app: GatewayApp, *, keep_alive: float = 75.0, graceful_timeout: float = 30.0
    ) -> None:
        config = app.config
        self.app = app
        self.keep_alive = keep_alive
        self.graceful_timeout = graceful_timeout
        self.header_timeout = config.header_timeout
        self.body_timeout = config.body_timeout
        self.min_body_rate = max(1, config.min_body_rate)
        self.max_connections = config.max_connections
        full = TooManyConnections(
            f"the gateway holds its maximum of {self.max_connections} connections; retry "
            "shortly, or reuse connections (keep-alive)"
        )
        self.full_answer = refusal(full)
        self.refused = 0  # connections refused since the last sweep
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
            sweeper = loop.create_task(self._sweep(), name="gateway-deadlines")
            stack.push_async_callback(self._shut_down, listener, sweeper)
            self.started.set()
            await self._stop.wait()

    async def _shut_down(self, listener: asyncio.Server, sweeper: asyncio.Task[None]) -> None:
        sweeper.cancel()
        listener.close()
        await self._drain_connections()

    async def _sweep(self) -> None:
        """Apply every connection's deadline (keep-alive, header, body) in one periodic
        sweep, instead of a timer per request."""
        loop = asyncio.get_running_loop()
        shortest = min(self.keep_alive, self.header_timeout, self.body_timeout)
        period = min(shortest / 2, SWEEP_MAX)  # deadlines are kept within one period
        while True:
            await asyncio.sleep(period)
            now = loop.time()
            for conn in list(self.connections):
                conn.expire(now)
            if self.refused:
                logger.warning(
                    "refused %d connections: the gateway holds its maximum of %d (max_connections)",
                    self.refused,
                    self.max_connections,
                )
                self.refused = 0

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
