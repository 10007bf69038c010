"""HTTP/1.1 client for upstream calls: keep-alive pools on asyncio protocols + httptools.

The gateway's only network dependency on the request path sits behind two methods
(``UpstreamClient.request`` and the ``UpstreamResponse`` it returns). This client
parses responses with httptools (the parser uvicorn uses) straight from
``data_received``: no per-request stream objects, timers only while waiting. Idle
connections are reused LIFO per origin and dropped after ``keepalive_expiry`` seconds,
below the 5 s idle timeout of common engine servers; a request whose reused connection
turns out to be closed before any response byte is sent again on a fresh connection.
A response body is read whole (``read``) or chunk by chunk (``next_chunk``), with
reading paused while more than ``HIGH_WATER`` bytes wait for a slow client; a body
larger than ``max_response_bytes`` closes the connection and fails with
``UpstreamTooLarge``.
``aiohttp_upstream.AiohttpUpstreamClient`` implements the same seam on aiohttp.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, cast
from urllib.parse import urlsplit

import httptools

from maasbase.gateway.errors import UpstreamFailed, UpstreamTimeout, UpstreamTooLarge

Headers = Sequence[tuple[bytes, bytes]]
HIGH_WATER = 256 * 1024
MAX_RESPONSE_BYTES = 128 * 1024 * 1024
FRAMING = frozenset({b"content-length", b"transfer-encoding"})


class UpstreamResponse(Protocol):
    status: int
    headers: list[tuple[bytes, bytes]]  # names lowercased

    async def read(self) -> bytes: ...

    async def next_chunk(self) -> bytes:
        """The next body bytes available, b"" at the end of the body."""
        ...

    def release(self) -> None:
        """Done with the response: the connection is reused if the body was read whole,
        closed otherwise (which cancels the request at the upstream)."""
        ...


class UpstreamClient(Protocol):
    async def request(
        self, method: bytes, url: str, headers: Headers, body: bytes
    ) -> UpstreamResponse: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True)
class Origin:
    host: str
    port: int
    tls: bool
    authority: bytes

    @property
    def label(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.authority.decode()}"


@functools.lru_cache(maxsize=4096)
def request_head(method: bytes, url: str) -> tuple[Origin, bytes]:
    """Origin and the first lines of a request to ``url`` (request line and host)."""
    origin, target = split_url(url)
    return origin, method + b" " + target + b" HTTP/1.1\r\nhost: " + origin.authority + b"\r\n"


@functools.lru_cache(maxsize=4096)
def split_url(url: str) -> tuple[Origin, bytes]:
    """Origin and request target (path and query) of an absolute http(s) URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UpstreamFailed(f"upstream URL {url!r} is not an absolute http(s) URL")
    tls = parts.scheme == "https"
    port = parts.port or (443 if tls else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    authority = parts.netloc.rpartition("@")[2]
    return Origin(parts.hostname, port, tls, authority.encode()), target.encode()


class _Connection(asyncio.Protocol):
    """One keep-alive connection; at most one exchange at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop, max_body: int) -> None:
        self.loop = loop
        self.max_body = max_body
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        self.reset()

    def reset(self) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.body_size = 0
        self.received = False
        self.headers_done = False
        self.complete = False
        self.error: BaseException | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.paused = False
        self.high_water = HIGH_WATER
        self.body_until_eof = False
        self.framed = False  # a content-length or transfer-encoding header came
        self.keep_alive = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.error = exc
            self.close()
            self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.complete and self.error is None:
            if self.headers_done and self.body_until_eof:
                self.complete = True
            else:
                self.error = exc or ConnectionResetError("the upstream closed the connection")
        self._wake()

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        self.headers.append((name, value))
        if name in FRAMING:
            self.framed = True

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()  # reset once the message completes
        self.headers_done = True
        self.body_until_eof = not self.framed
        self._wake()

    def on_body(self, body: bytes) -> None:
        if self.error is not None:
            return
        self.body_size += len(body)
        if self.body_size > self.max_body:
            self.error = UpstreamTooLarge(
                f"the model server's answer is larger than {self.max_body} bytes, the "
                "gateway's max_response_bytes; ask for less (max_tokens, fewer inputs)"
            )
            self.close()
            self._wake()
            return
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > self.high_water and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self.error is not None:
            return  # the body was cut at max_body
        self.complete = True
        self._wake()

    # exchange
    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def wait(self, limit: float) -> None:
        waiter = self.waiter = self.loop.create_future()
        timer = self.loop.call_later(limit, _expire, waiter)
        try:
            await waiter
        finally:
            timer.cancel()

    def take_chunks(self) -> bytes:
        data = self.chunks[0] if len(self.chunks) == 1 else b"".join(self.chunks)
        self.chunks.clear()
        self.buffered = 0
        if self.paused and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
        return data

    def reusable(self) -> bool:
        return self.complete and not self.closed and self.error is None and self.keep_alive

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class PooledResponse:
    def __init__(
        self, client: PooledUpstreamClient, origin: Origin, conn: _Connection, timeout: float
    ) -> None:
        self._client = client
        self._origin = origin
        self._conn: _Connection | None = conn
        self._timeout = timeout
        self.status = conn.status
        self.headers = conn.headers

    def _live(self) -> _Connection:
        if self._conn is None:
            raise RuntimeError("the response was already released")
        return self._conn

    async def _wait(self, conn: _Connection) -> None:
        if isinstance(conn.error, UpstreamTooLarge):
            raise conn.error
        if conn.error is not None:
            raise UpstreamFailed(
                f"{self._origin.label} failed while sending its response ({conn.error!r})"
            ) from conn.error
        try:
            await conn.wait(self._timeout)
        except TimeoutError as exc:
            raise UpstreamTimeout(
                f"{self._origin.label} sent nothing for {self._timeout:g} s"
            ) from exc

    async def read(self) -> bytes:
        conn = self._live()
        conn.high_water = 1 << 62
        if conn.paused and conn.transport is not None:
            conn.paused = False
            conn.transport.resume_reading()
        while not conn.complete:
            await self._wait(conn)
        return conn.take_chunks() if conn.chunks else b""

    async def next_chunk(self) -> bytes:
        conn = self._live()
        while not conn.chunks:
            if conn.complete:
                return b""
            await self._wait(conn)
        return conn.take_chunks()

    def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            self._client.checkin(self._origin, conn)


class PooledUpstreamClient:
    def __init__(
        self,
        *,
        connect_timeout: float = 10.0,
        read_timeout: float = 600.0,
        keepalive_expiry: float = 4.0,
        max_idle_per_origin: int = 1024,
        ssl_context: ssl.SSLContext | None = None,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
    ) -> None:
        self.connect_timeout = connect_timeout
        self.max_response_bytes = max_response_bytes
        self.read_timeout = read_timeout
        self.keepalive_expiry = keepalive_expiry
        self.max_idle_per_origin = max_idle_per_origin
        self._ssl = ssl_context
        self._idle: dict[Origin, list[_Connection]] = {}
        self._closed = False

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
        return self._ssl

    async def _connect(self, origin: Origin) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await loop.create_connection(
                    lambda: _Connection(loop, self.max_response_bytes),
                    origin.host,
                    origin.port,
                    ssl=self._ssl_context() if origin.tls else None,
                    server_hostname=origin.host if origin.tls else None,
                )
        except TimeoutError as exc:
            raise UpstreamFailed(
                f"connecting to {origin.label} took longer than {self.connect_timeout:g} s"
            ) from exc
        except OSError as exc:
            raise UpstreamFailed(
                f"cannot connect to {origin.label} ({exc.strerror or exc!r})"
            ) from exc
        return conn

    def _checkout(self, origin: Origin, now: float) -> _Connection | None:
        idle = self._idle.get(origin)
        while idle:
            conn = idle.pop()
            if not conn.closed and now - conn.idle_since < self.keepalive_expiry:
                return conn
            conn.close()
        return None

    def checkin(self, origin: Origin, conn: _Connection) -> None:
        if self._closed or not conn.reusable():
            conn.close()
            return
        idle = self._idle.setdefault(origin, [])
        if len(idle) >= self.max_idle_per_origin:
            conn.close()
            return
        conn.reset()
        conn.idle_since = conn.loop.time()
        idle.append(conn)

    async def request(
        self, method: bytes, url: str, headers: Headers, body: bytes
    ) -> PooledResponse:
        origin, first = request_head(method, url)
        head = [first, b"content-length: %d\r\n" % len(body)]
        for name, value in headers:
            head += (name, b": ", value, b"\r\n")
        head += (b"\r\n", body)
        payload = b"".join(head)
        loop = asyncio.get_running_loop()
        conn = self._checkout(origin, loop.time())
        reused = conn is not None
        while True:
            if conn is None:
                conn = await self._connect(origin)
            assert conn.transport is not None
            conn.transport.write(payload)
            try:
                while not conn.headers_done:
                    if conn.error is not None:
                        raise conn.error
                    await conn.wait(self.read_timeout)
            except TimeoutError as exc:
                conn.close()
                raise UpstreamTimeout(
                    f"{origin.label} did not answer within {self.read_timeout:g} s"
                ) from exc
            except BaseException as exc:
                conn.close()
                if reused and not conn.received and isinstance(exc, Exception):
                    conn, reused = None, False  # a stale keep-alive connection: once more
                    continue
                if isinstance(exc, Exception):
                    raise UpstreamFailed(
                        f"{origin.label} closed the connection before answering ({exc!r})"
                    ) from exc
                raise
            return PooledResponse(self, origin, conn, self.read_timeout)

    async def aclose(self) -> None:
        self._closed = True
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()
        await asyncio.sleep(0)  # let the transports finish closing
