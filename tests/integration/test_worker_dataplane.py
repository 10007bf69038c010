"""The worker's data-plane proxy on a real uvicorn in front of a real HTTP engine stub:
who may use it, what it forwards, that bodies stream both ways, and that a caller who
goes away stops the engine's work."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import httpx
import pytest
from aiohttp import web

from maasbase.common.http_server import make_server
from maasbase.gateway.testing import listening_socket
from maasbase.worker.api import create_worker_app
from maasbase.worker.dataplane import DataPlane

pytestmark = pytest.mark.integration

DATA_PLANE_SECRET = "dp-" + "a" * 61
API_SECRET = "api-" + "b" * 60
INSTANCE = 7
WAIT = 10.0


@dataclass
class Engine:
    """What the engine stub saw, and the events a test steers it with."""

    port: int = 0
    seen: list[dict[str, object]] = field(default_factory=list)
    first_event_read: asyncio.Event = field(default_factory=asyncio.Event)
    first_chunk_arrived: asyncio.Event = field(default_factory=asyncio.Event)
    caller_gone: asyncio.Event = field(default_factory=asyncio.Event)

    async def echo(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.seen.append(
            {"path": request.path_qs, "headers": dict(request.headers), "body": body.decode()}
        )
        return web.json_response({"got": body.decode()}, status=201, headers={"X-Engine": "1"})

    async def upload(self, request: web.Request) -> web.Response:
        first = await request.content.readany()
        self.first_chunk_arrived.set()
        rest = await request.content.read()
        return web.json_response({"bytes": len(first) + len(rest)})

    async def stream(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b'data: {"n": 1}\n\n')
        # The second event only once the caller has read the first: a proxy that
        # buffered the response would never deliver it.
        await self.first_event_read.wait()
        await response.write(b'data: {"n": 2}\n\ndata: [DONE]\n\n')
        await response.write_eof()
        return response

    async def endless(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        try:
            for _ in range(int(WAIT / 0.02)):
                await response.write(b'data: {"token": "x"}\n\n')
                await asyncio.sleep(0.02)
        except ConnectionError:
            self.caller_gone.set()
        return response


@asynccontextmanager
async def engine_stub() -> AsyncIterator[Engine]:
    engine = Engine()
    app = web.Application()
    app.router.add_post("/v1/echo", engine.echo)
    app.router.add_get("/v1/echo", engine.echo)
    app.router.add_post("/v1/upload", engine.upload)
    app.router.add_post("/v1/stream", engine.stream)
    app.router.add_post("/v1/endless", engine.endless)
    runner = web.AppRunner(app, handler_cancellation=False)
    await runner.setup()
    site = web.SockSite(runner, listening_socket())
    await site.start()
    engine.port = site._sock.getsockname()[1]  # type: ignore[union-attr]
    try:
        yield engine
    finally:
        await runner.cleanup()


@dataclass
class Worker:
    url: str
    engine: Engine

    def client(self, secret: str | None = DATA_PLANE_SECRET) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {secret}"} if secret else {}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=WAIT)


@pytest.fixture
async def worker() -> AsyncIterator[Worker]:
    async with engine_stub() as engine:
        ports = {INSTANCE: engine.port, 8: unused_port()}
        api = create_worker_app(lambda: API_SECRET, lambda: None, lambda _i: None)
        dataplane = DataPlane(api, secret=lambda: DATA_PLANE_SECRET, port_of=ports.get)
        sock = listening_socket()
        server = make_server(dataplane)
        task = asyncio.create_task(server.serve(sockets=[sock]))
        try:
            while not server.started:
                assert not task.done()
                await asyncio.sleep(0.005)
            yield Worker(f"http://127.0.0.1:{sock.getsockname()[1]}", engine)
        finally:
            server.should_exit = True
            await task
            await dataplane.aclose()
            sock.close()


def unused_port() -> int:
    """A port nothing listens on (bound, then closed)."""
    sock = listening_socket()
    port: int = sock.getsockname()[1]
    sock.close()
    return port


def proxied(path: str, instance: int = INSTANCE) -> str:
    return f"/proxy/instances/{instance}{path}"


async def test_callers_without_the_data_plane_secret_are_refused(worker: Worker) -> None:
    for secret in (None, "wrong", API_SECRET):
        async with worker.client(secret) as client:
            response = await client.post(proxied("/v1/echo"), json={})
        assert response.status_code == 401, secret
        assert response.json()["error"]["code"] == "unauthenticated"
        assert "data-plane secret" in response.json()["error"]["message"]
    assert worker.engine.seen == []
    # Least privilege: the data-plane secret does not open the worker's own API.
    async with worker.client() as client:
        assert (await client.get("/v1/hardware")).status_code == 401


async def test_only_instances_this_worker_runs_are_reachable(worker: Worker) -> None:
    async with worker.client() as client:
        unknown = await client.get(proxied("/v1/models", instance=99))
        assert unknown.status_code == 404
        assert "instance 99 does not run on this worker" in unknown.json()["error"]["message"]
        assert (await client.get("/proxy/instances/x/v1/models")).status_code == 404
        assert (await client.get(f"/proxy/instances/{worker.engine.port}/")).status_code == 404
        down = await client.get(proxied("/v1/models", instance=8))
        assert down.status_code == 502
        assert "does not answer" in down.json()["error"]["message"]


async def test_forwards_request_and_response_without_the_secret(worker: Worker) -> None:
    async with worker.client() as client:
        response = await client.post(
            proxied("/v1/echo?a=1&b=%2F"),
            content=b'{"model": "m"}',
            headers={"Content-Type": "application/json", "X-Request-Id": "r1"},
        )
    assert response.status_code == 201
    assert response.json() == {"got": '{"model": "m"}'}
    assert response.headers["x-engine"] == "1"
    [seen] = worker.engine.seen
    assert seen["path"] == "/v1/echo?a=1&b=%2F"
    headers = {k.lower(): v for k, v in seen["headers"].items()}  # type: ignore[attr-defined]
    assert "authorization" not in headers
    assert headers["x-request-id"] == "r1"
    assert headers["content-type"] == "application/json"
    assert headers["host"] == f"127.0.0.1:{worker.engine.port}"


async def test_streams_sse_event_by_event(worker: Worker) -> None:
    events: list[dict[str, int]] = []
    async with (
        asyncio.timeout(WAIT),
        worker.client() as client,
        client.stream("POST", proxied("/v1/stream"), json={"stream": True}) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        async for line in response.aiter_lines():
            if line.startswith("data: {"):
                events.append(json.loads(line.removeprefix("data: ")))
                worker.engine.first_event_read.set()
    assert events == [{"n": 1}, {"n": 2}]


@pytest.mark.parametrize("framing", ["chunked", "content-length"])
async def test_streams_the_request_body(worker: Worker, framing: str) -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b"x" * 1000
        # The second part only once the engine has the first: a proxy that read the
        # whole body before forwarding it would never let it through.
        await worker.engine.first_chunk_arrived.wait()
        yield b"y" * 500

    headers = {"Content-Length": "1500"} if framing == "content-length" else {}
    async with asyncio.timeout(WAIT), worker.client() as client:
        response = await client.post(proxied("/v1/upload"), content=body(), headers=headers)
    assert response.status_code == 200
    assert response.json() == {"bytes": 1500}


async def test_a_caller_going_away_stops_the_engine_request(worker: Worker) -> None:
    async with asyncio.timeout(WAIT), worker.client() as client:
        async with client.stream("POST", proxied("/v1/endless"), json={}) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if line.startswith("data:"):
                    break
        # The client closed its connection; the proxy closes the engine's.
        await worker.engine.caller_gone.wait()
