"""The gateway's own HTTP/1.1 server, spoken to byte by byte over real sockets.

The gateway runs on ``GatewayServer`` with the in-repo fakes of its control-plane seams
and a stub OpenAI upstream on a real port; the client side is raw asyncio streams, so
keep-alive, pipelining, chunking, limits and disconnects are seen as a client sees them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httptools
import pytest

from maasbase.gateway.app import GatewayApp, create_gateway_app
from maasbase.gateway.config import GatewayConfig
from maasbase.gateway.fakes import FakeKeyResolver, FakeRoutingSource, MemoryUsageSink, grant
from maasbase.gateway.fakes import routing_table as table
from maasbase.gateway.server import GatewayServer, request_path
from maasbase.gateway.testing import StubUpstream, eventually, listening_socket

pytestmark = pytest.mark.integration

KEY = b"sk-good"
CHAT = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()


@dataclass
class Answer:
    status: int = 0
    headers: dict[bytes, bytes] = field(default_factory=dict)
    body: bytes = b""
    http_version: str = ""
    done: bool = False

    def json(self) -> dict[str, object]:
        payload = json.loads(self.body)
        assert isinstance(payload, dict)
        return payload


class Reader:
    """Parses the answers arriving on one connection, in order."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self.reader = reader
        self.answers: list[Answer] = []
        self.taken = 0
        self._current = Answer()
        self.parser = httptools.HttpResponseParser(self)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._current.headers[name.lower()] = value

    def on_headers_complete(self) -> None:
        self._current.status = self.parser.get_status_code()
        self._current.http_version = self.parser.get_http_version()

    def on_body(self, body: bytes) -> None:
        self._current.body += body

    def on_message_complete(self) -> None:
        self._current.done = True
        self.answers.append(self._current)
        self._current = Answer()

    async def next(self, within: float = 5.0) -> Answer:
        async with asyncio.timeout(within):
            while len(self.answers) == self.taken:
                data = await self.reader.read(65536)
                if not data:
                    self.parser.feed_data(b"")  # the end of a close-delimited body
                    if self._current.status and not self._current.done:
                        self.on_message_complete()
                        break
                    raise ConnectionError("the server closed the connection")
                self.parser.feed_data(data)
        self.taken += 1
        return self.answers[self.taken - 1]

    async def closed(self, within: float = 5.0) -> bool:
        async with asyncio.timeout(within):
            return await self.reader.read(65536) == b""


def post(path: str, body: bytes, *, version: str = "1.1", extra: bytes = b"") -> bytes:
    return (
        f"POST {path} HTTP/{version}\r\nhost: gw\r\ncontent-type: application/json\r\n"
        f"authorization: Bearer {KEY.decode()}\r\ncontent-length: {len(body)}\r\n".encode()
        + extra
        + b"\r\n"
        + body
    )


def get(path: str, method: str = "GET") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nhost: gw\r\nauthorization: Bearer sk-good\r\n\r\n".encode()


@dataclass
class Served:
    app: GatewayApp
    server: GatewayServer
    stub: StubUpstream
    port: int
    task: asyncio.Task[None]
    writers: list[asyncio.StreamWriter] = field(default_factory=list)

    async def connect(self) -> tuple[Reader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writers.append(writer)
        return Reader(reader), writer

    async def close_clients(self) -> None:
        for writer in self.writers:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    stub = StubUpstream()
    await stub.start()
    app = create_gateway_app(
        routes=FakeRoutingSource(table("1", {"m": [stub.base_url]})),
        keys=FakeKeyResolver({KEY.decode(): grant(1)}),
        usage=MemoryUsageSink(),
        config=GatewayConfig(max_body_bytes=4096, usage_flush_interval=0.02),
    )
    server = GatewayServer(app, keep_alive=0.4, graceful_timeout=2)
    sock = listening_socket()
    task = asyncio.get_running_loop().create_task(server.serve(sock))
    await asyncio.wait_for(server.started.wait(), 5)
    served = Served(app, server, stub, sock.getsockname()[1], task)
    try:
        yield served
    finally:
        await served.close_clients()
        server.stop()
        await asyncio.wait_for(task, 10)
        sock.close()
        await stub.aclose()


async def test_keep_alive_serves_requests_one_after_another(served: Served) -> None:
    reader, writer = await served.connect()
    for _ in range(3):
        writer.write(post("/v1/chat/completions", CHAT))
        answer = await reader.next()
        assert answer.status == 200
        assert answer.headers[b"content-type"].startswith(b"application/json")
        assert int(answer.headers[b"content-length"]) == len(answer.body)
        assert answer.json()["object"] == "chat.completion"
    assert served.stub.count == 3


async def test_pipelined_requests_are_answered_in_order(served: Served) -> None:
    served.stub.delay = 0.05  # the first answer is the slowest
    reader, writer = await served.connect()
    writer.write(post("/v1/chat/completions", CHAT) + get("/healthz") + get("/v1/models"))
    first, second, third = [await reader.next() for _ in range(3)]
    assert first.json()["object"] == "chat.completion"
    assert second.json() == {"status": "ok"}
    assert third.json()["object"] == "list"


async def test_expect_continue_gets_an_interim_answer(served: Served) -> None:
    reader, writer = await served.connect()
    head = post("/v1/chat/completions", b"", extra=b"expect: 100-continue\r\n")
    writer.write(head.replace(b"content-length: 0", b"content-length: %d" % len(CHAT)))
    interim = await reader.reader.readuntil(b"\r\n\r\n")
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(CHAT)
    assert (await reader.next()).status == 200


async def test_a_body_over_the_limit_is_refused_before_it_is_read(served: Served) -> None:
    reader, writer = await served.connect()
    writer.write(post("/v1/chat/completions", b"x" * 5000))
    answer = await reader.next()
    assert answer.status == 413
    assert answer.json()["error"]["code"] == "request_too_large"  # type: ignore[index]
    assert await reader.closed()
    assert served.stub.count == 0


async def test_a_chunked_body_over_the_limit_is_refused(served: Served) -> None:
    reader, writer = await served.connect()
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    for _ in range(3):
        writer.write(b"800\r\n" + b"x" * 0x800 + b"\r\n")
    answer = await reader.next()
    assert answer.status == 413
    assert await reader.closed()


async def test_huge_headers_and_garbage_are_refused(served: Served) -> None:
    reader, writer = await served.connect()
    writer.write(b"GET /healthz HTTP/1.1\r\nx-big: " + b"a" * 70_000 + b"\r\n\r\n")
    answer = await reader.next()
    assert answer.status == 431
    assert "headers" in answer.json()["error"]["message"]  # type: ignore[index]

    reader, writer = await served.connect()  # headers that never end, in small pieces
    writer.write(b"GET /healthz HTTP/1.1\r\n")
    for _ in range(200):
        writer.write(b"x-more: " + b"b" * 8000 + b"\r\n")
    assert (await reader.next()).status == 431

    reader, writer = await served.connect()  # garbage after a good request: answered after it
    writer.write(get("/healthz") + b"NOT HTTP AT ALL\r\n\r\n")
    assert (await reader.next()).json() == {"status": "ok"}
    answer = await reader.next()
    assert answer.status == 400
    assert await reader.closed()

    reader, writer = await served.connect()
    writer.write(b"NOT HTTP AT ALL\r\n\r\n")
    answer = await reader.next()
    assert answer.status == 400
    assert "malformed" in answer.json()["error"]["message"]  # type: ignore[index]
    assert await reader.closed()


async def test_streams_are_chunked_for_http11_and_close_delimited_for_http10(
    served: Served,
) -> None:
    body = json.dumps({**json.loads(CHAT), "stream": True}).encode()
    reader, writer = await served.connect()
    writer.write(post("/v1/chat/completions", body))
    answer = await reader.next()
    assert answer.headers[b"transfer-encoding"] == b"chunked"
    assert answer.headers[b"content-type"].startswith(b"text/event-stream")
    assert answer.body.endswith(b"data: [DONE]\n\n")
    writer.write(get("/healthz"))  # the connection goes on
    assert (await reader.next()).status == 200

    reader, writer = await served.connect()
    writer.write(post("/v1/chat/completions", body, version="1.0"))
    answer = await reader.next()
    assert b"transfer-encoding" not in answer.headers
    assert answer.headers[b"connection"] == b"close"
    assert answer.body.endswith(b"data: [DONE]\n\n")
    assert answer.body.count(b"data: ") == 8  # role, five tokens, finish, [DONE]
    assert b'"usage"' not in answer.body  # asked for by the gateway, stripped again


async def test_head_answers_headers_only(served: Served) -> None:
    reader, writer = await served.connect()
    writer.write(get("/healthz", method="HEAD"))
    writer.write(get("/healthz"))
    raw = b""
    async with asyncio.timeout(5):
        while raw.count(b"HTTP/1.1") < 2 or not raw.endswith(b'{"status":"ok"}'):
            raw += await reader.reader.read(65536)
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"content-length: 15" in head  # the length a GET would get, and no body
    assert rest.startswith(b"HTTP/1.1 200 OK\r\n")


async def test_a_client_that_goes_away_stops_the_upstream_stream(served: Served) -> None:
    served.stub.endless = True
    served.stub.chunk_delay = 0.01
    reader, writer = await served.connect()
    writer.write(post("/v1/chat/completions", json.dumps({**json.loads(CHAT), "stream": True})
                      .encode()))  # fmt: skip
    await reader.reader.readuntil(b"data: ")
    writer.transport.abort()
    await eventually(lambda: served.stub.abandoned == 1, within=5)
    assert not served.server.connections or all(c.call is None for c in served.server.connections)


async def test_idle_connections_are_closed_after_keep_alive(served: Served) -> None:
    reader, writer = await served.connect()
    writer.write(get("/healthz"))
    assert (await reader.next()).status == 200
    assert await reader.closed(within=3)  # keep_alive is 0.4 s in this fixture


async def test_stop_lets_running_requests_finish_and_refuses_new_ones(served: Served) -> None:
    served.stub.delay = 0.3
    reader, writer = await served.connect()
    writer.write(post("/v1/chat/completions", CHAT))
    await asyncio.sleep(0.1)
    served.server.stop()
    answer = await reader.next()
    assert answer.status == 200
    assert answer.headers[b"connection"] == b"close"
    assert await reader.closed()
    await asyncio.wait_for(served.task, 5)
    with pytest.raises(OSError):
        await served.connect()


def test_request_paths_are_decoded() -> None:
    assert request_path(b"/v1/models/org%2Fname?x=1") == "/v1/models/org/name"
    assert request_path(b"http://gw:8080/v1/models") == "/v1/models"
    assert request_path(b"/healthz") == "/healthz"
