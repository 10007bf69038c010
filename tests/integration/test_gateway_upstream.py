"""The upstream HTTP client against scripted raw HTTP servers on real ports: keep-alive
reuse, stale connections, bodies framed by length, chunks or close, and timeouts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from maasbase.gateway.errors import UpstreamFailed, UpstreamTimeout
from maasbase.gateway.testing import StubUpstream
from maasbase.gateway.upstream import PooledUpstreamClient
from tests.support.tls import make_tls

pytestmark = pytest.mark.integration

Answer = Callable[[int, asyncio.StreamWriter], "asyncio.Future[None] | object"]
JSON = [(b"content-type", b"application/json")]


class Script:
    """A server that answers each request with ``respond(request_number, writer)``."""

    def __init__(self, respond: Callable[[int, asyncio.StreamWriter], object]) -> None:
        self.respond = respond
        self.connections = 0
        self.requests = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                await reader.readexactly(length)
                self.requests += 1
                result = self.respond(self.requests, writer)
                if asyncio.iscoroutine(result):
                    await result
                await writer.drain()
                if writer.is_closing():
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@asynccontextmanager
async def scripted(
    respond: Callable[[int, asyncio.StreamWriter], object],
) -> AsyncIterator[tuple[str, Script]]:
    script = Script(respond)
    server = await asyncio.start_server(script.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/v1/x", script
    finally:
        server.close()
        await server.wait_closed()


def ok(body: bytes = b'{"ok":true}', extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n%s\r\n%s" % (len(body), extra, body)


@pytest.fixture
async def client() -> AsyncIterator[PooledUpstreamClient]:
    upstream = PooledUpstreamClient(read_timeout=2)
    yield upstream
    await upstream.aclose()


async def fetch(client: PooledUpstreamClient, url: str) -> tuple[int, bytes]:
    response = await client.request(b"POST", url, JSON, b"{}")
    try:
        return response.status, await response.read()
    finally:
        response.release()


async def test_keep_alive_connections_are_reused(client: PooledUpstreamClient) -> None:
    async with scripted(lambda n, w: w.write(ok())) as (url, script):
        for _ in range(5):
            assert await fetch(client, url) == (200, b'{"ok":true}')
    assert (script.connections, script.requests) == (1, 5)


async def test_a_connection_closed_by_the_server_is_replaced(
    client: PooledUpstreamClient,
) -> None:
    def answer_then_close(n: int, writer: asyncio.StreamWriter) -> None:
        writer.write(ok())
        writer.close()  # an idle timeout without "connection: close"

    async with scripted(answer_then_close) as (url, script):
        for _ in range(3):
            assert (await fetch(client, url))[0] == 200
            await asyncio.sleep(0.01)
    assert script.connections == 3


async def test_a_stale_connection_is_retried_once_on_a_fresh_one(
    client: PooledUpstreamClient,
) -> None:
    def drop_second(n: int, writer: asyncio.StreamWriter) -> None:
        if n == 2:
            writer.transport.abort()  # closed after reading the request, before any answer
        else:
            writer.write(ok())

    async with scripted(drop_second) as (url, script):
        assert (await fetch(client, url))[0] == 200
        assert (await fetch(client, url))[0] == 200
    assert (script.connections, script.requests) == (2, 3)


async def test_bodies_framed_by_chunks_or_by_close(client: PooledUpstreamClient) -> None:
    async def chunked(n: int, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"6\r\nsecond\r\n0\r\n\r\n")

    async with scripted(chunked) as (url, _):
        response = await client.request(b"POST", url, JSON, b"{}")
        assert await response.next_chunk() == b"first"  # before the rest was even sent
        assert await response.next_chunk() == b"second"
        assert await response.next_chunk() == b""
        response.release()

    def until_close(n: int, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nall of it")
        writer.close()

    async with scripted(until_close) as (url, _):
        assert await fetch(client, url) == (200, b"all of it")


async def test_failures_are_typed(client: PooledUpstreamClient) -> None:
    def silent(n: int, writer: asyncio.StreamWriter) -> None:
        pass  # reads the request, never answers

    impatient = PooledUpstreamClient(read_timeout=0.1)
    async with scripted(silent) as (url, _):
        with pytest.raises(UpstreamTimeout):
            await impatient.request(b"POST", url, JSON, b"{}")
    await impatient.aclose()

    def hang_up(n: int, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial")
        writer.transport.abort()

    async with scripted(hang_up) as (url, _):
        response = await client.request(b"POST", url, JSON, b"{}")
        with pytest.raises(UpstreamFailed, match="failed while sending"):
            await response.read()
        response.release()
    with pytest.raises(UpstreamFailed, match="cannot connect"):
        await client.request(b"POST", "http://127.0.0.1:1/v1/x", JSON, b"{}")


# --- HTTPS upstreams (cloud providers) ------------------------------------------------


async def test_https_upstreams_are_verified_and_reused(tmp_path: Path) -> None:
    tls = make_tls(tmp_path)
    stub = StubUpstream("secure")
    await stub.start(tls=tls.server_context())
    client = PooledUpstreamClient(ssl_context=tls.client_context())
    try:
        assert stub.base_url.startswith("https://127.0.0.1:")
        for _ in range(3):
            response = await client.request(
                b"POST", f"{stub.base_url}/embeddings", JSON, b'{"model":"m","input":"x"}'
            )
            assert response.status == 200
            assert b'"embedding"' in await response.read()
            response.release()
        assert len(client._idle[next(iter(client._idle))]) == 1  # one TLS connection, reused
    finally:
        await client.aclose()
        await stub.aclose()


async def test_an_untrusted_https_upstream_fails_clearly(tmp_path: Path) -> None:
    tls = make_tls(tmp_path)
    stub = StubUpstream("self-signed")
    await stub.start(tls=tls.server_context())
    client = PooledUpstreamClient()  # the system's trust store: the test CA is not in it
    try:
        with pytest.raises(UpstreamFailed, match="CERTIFICATE_VERIFY_FAILED"):
            await client.request(b"POST", f"{stub.base_url}/embeddings", JSON, b"{}")
        assert stub.count == 0
    finally:
        await client.aclose()
        await stub.aclose()
