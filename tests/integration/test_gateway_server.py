"""The gateway's own HTTP/1.1 server, spoken to byte by byte over real sockets.

The gateway runs on ``GatewayServer`` with the in-repo fakes of its control-plane seams
and a stub OpenAI upstream on a real port; the client side is raw asyncio streams, so
keep-alive, pipelining, chunking, limits and disconnects are seen as a client sees them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httptools
import pytest

from maasbase.gateway.app import GatewayApp, create_gateway_app
from maasbase.gateway.config import GatewayConfig
from maasbase.gateway.fakes import FakeKeyResolver, FakeRoutingSource, MemoryUsageSink, grant
from maasbase.gateway.fakes import routing_table as table
from maasbase.gateway.native_call import LAST_CHUNK
from maasbase.gateway.server import CONTINUE, GatewayServer, request_path
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


@contextlib.asynccontextmanager
async def serve(config: GatewayConfig, *, receive_buffer: int = 0) -> AsyncIterator[Served]:
    """The gateway on its own server with ``config`` (keep-alive 0.4 s), a stub upstream
    behind it; ``receive_buffer`` fixes the kernel's receive buffer of its connections."""
    stub = StubUpstream()
    await stub.start()
    app = create_gateway_app(
        routes=FakeRoutingSource(table("1", {"m": [stub.base_url]})),
        keys=FakeKeyResolver({KEY.decode(): grant(1)}),
        usage=MemoryUsageSink(),
        config=config,
    )
    server = GatewayServer(app, keep_alive=0.4, graceful_timeout=2)
    sock = listening_socket()
    if receive_buffer:  # inherited by accepted sockets
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
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


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    async with serve(GatewayConfig(max_body_bytes=4096, usage_flush_interval=0.02)) as served:
        yield served


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


# At the edges: clients that are slow, many or pipelining, upstreams that break or flood.

STREAM = json.dumps({**json.loads(CHAT), "stream": True}).encode()
SHORT = {"usage_flush_interval": 0.02, "header_timeout": 0.3, "body_timeout": 0.3}


async def read_to_end(reader: Reader, within: float = 5.0) -> bytes:
    """Every byte the server sends until it closes the connection."""
    raw = b""
    async with asyncio.timeout(within):
        while data := await reader.reader.read(65536):
            raw += data
    return raw


async def test_continue_waits_until_the_answers_before_it_are_sent(served: Served) -> None:
    served.stub.chunk_delay = 0.02  # the first answer streams for a while
    reader, writer = await served.connect()
    head = post("/v1/chat/completions", b"", extra=b"expect: 100-continue\r\n")
    head = head.replace(b"content-length: 0", b"content-length: %d" % len(CHAT))
    writer.write(post("/v1/chat/completions", STREAM) + head)
    raw = await reader.reader.readuntil(CONTINUE)
    stream_end = raw.find(LAST_CHUNK)
    assert stream_end != -1, "100 Continue arrived inside the answer before it"
    assert raw.endswith(LAST_CHUNK + CONTINUE)  # right after that answer, not before
    writer.write(CHAT)
    rest = Reader(reader.reader)
    answer = await rest.next()
    assert answer.status == 200
    assert answer.json()["object"] == "chat.completion"


async def test_a_pipelined_body_waits_in_the_client_until_its_turn() -> None:
    body = b"x" * (2 * 1024 * 1024)  # not JSON: answered 400 when its turn comes
    config = GatewayConfig(max_json_body_bytes=4 * 1024 * 1024, usage_flush_interval=0.02)
    async with serve(config, receive_buffer=128 * 1024) as served:
        served.stub.delay = 1.0
        reader, writer = await served.connect()
        client = writer.get_extra_info("socket")
        client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 128 * 1024)
        writer.write(post("/v1/chat/completions", CHAT))
        await eventually(lambda: served.stub.count == 1)
        writer.write(post("/v1/chat/completions", body) + post("/v1/chat/completions", body))
        await asyncio.sleep(0.3)  # the first request is still being answered
        unsent = writer.transport.get_write_buffer_size()
        print(f"bytes the gateway left in the client while answering the first request: {unsent}")
        assert unsent > len(body)  # at most one body was read ahead (or part of one)
        assert [c.read_paused for c in served.server.connections] == [True]
        assert (await reader.next()).status == 200
        assert (await reader.next()).status == 400
        assert (await reader.next()).status == 400


@contextlib.asynccontextmanager
async def trickling(writer: asyncio.StreamWriter, byte: bytes) -> AsyncIterator[None]:
    """Send ``byte`` every 50 ms (for 5 s at most) while the block runs."""

    async def trickle() -> None:
        for _ in range(100):
            if writer.is_closing():
                return
            writer.write(byte)
            await asyncio.sleep(0.05)

    sender = asyncio.get_running_loop().create_task(trickle())
    try:
        yield
    finally:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sender


async def test_a_head_that_trickles_in_is_cut_at_the_header_deadline() -> None:
    async with serve(GatewayConfig(**SHORT)) as served:  # type: ignore[arg-type]
        reader, writer = await served.connect()
        writer.write(b"GET /healthz HTTP/1.1\r\nhost: gw\r\nx-slow: ")
        async with trickling(writer, b"x"):  # each byte would have reset an idle timer
            answer = await reader.next()
            assert answer.status == 408
            assert answer.json()["error"]["code"] == "request_timeout"  # type: ignore[index]
            assert await reader.closed()


async def test_a_body_that_trickles_in_is_cut_at_the_body_deadline() -> None:
    config = GatewayConfig(**SHORT, min_body_rate=1000)  # type: ignore[arg-type]
    async with serve(config) as served:
        reader, writer = await served.connect()
        writer.write(post("/v1/chat/completions", b"").replace(b"length: 0", b"length: 4000"))
        async with trickling(writer, b" "):  # 20 bytes a second, far below 1000
            answer = await reader.next()
            assert answer.status == 408
            assert "slower" in answer.json()["error"]["message"]  # type: ignore[index]
            assert await reader.closed()
        assert served.stub.count == 0

        reader, writer = await served.connect()  # a body at a normal pace is fine
        writer.write(post("/v1/chat/completions", CHAT)[: -len(CHAT)])
        await asyncio.sleep(0.05)
        writer.write(CHAT)
        assert (await reader.next()).status == 200


async def test_connections_past_the_cap_get_a_503_and_are_closed() -> None:
    config = GatewayConfig(max_connections=2, usage_flush_interval=0.02)
    async with serve(config) as served:
        held = [await served.connect() for _ in range(2)]
        for reader, writer in held:
            writer.write(get("/healthz"))
            assert (await reader.next()).status == 200
        reader, writer = await served.connect()
        writer.write(get("/healthz"))
        answer = await reader.next()
        assert answer.status == 503
        assert answer.headers[b"connection"] == b"close"
        assert answer.json()["error"]["code"] == "too_many_connections"  # type: ignore[index]
        assert await reader.closed()
        held[0][1].close()  # a place frees up
        await eventually(lambda: len(served.server.connections) < 2, within=3)
        reader, writer = await served.connect()
        writer.write(get("/healthz"))
        assert (await reader.next()).status == 200


async def test_an_upstream_that_breaks_mid_stream_cuts_the_connection(served: Served) -> None:
    served.stub.break_after = 2
    reader, writer = await served.connect()
    writer.write(post("/v1/chat/completions", STREAM) + get("/healthz"))
    raw = await read_to_end(reader)
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert b"transfer-encoding: chunked" in head
    assert b"failed while sending" in body  # the error event, for SDKs
    assert not body.endswith(LAST_CHUNK)  # but no last chunk: the body is visibly cut
    assert b"HTTP/1.1" not in body  # and the pipelined request behind it is not answered


async def test_an_upstream_answer_over_the_cap_is_refused_or_cut() -> None:
    config = GatewayConfig(max_response_bytes=2000, usage_flush_interval=0.02)
    async with serve(config) as served:
        served.stub.completion_tokens = 1000  # a long answer
        reader, writer = await served.connect()
        writer.write(post("/v1/chat/completions", CHAT))
        answer = await reader.next()
        assert answer.status == 502
        error = answer.json()["error"]
        assert error["code"] == "upstream_response_too_large"  # type: ignore[index]
        assert "max_response_bytes" in error["message"]  # type: ignore[index]
        writer.write(get("/healthz"))  # nothing was started: the connection goes on
        assert (await reader.next()).status == 200

        served.stub.chunk_delay = 0.005
        reader, writer = await served.connect()
        writer.write(post("/v1/chat/completions", STREAM))
        raw = await read_to_end(reader)
        assert raw.startswith(b"HTTP/1.1 200 OK")
        assert b"upstream_response_too_large" in raw
        assert not raw.endswith(LAST_CHUNK)
        assert len(raw) < 4000


async def test_bodies_are_capped_per_route_and_echoes_are_bounded() -> None:
    config = GatewayConfig(max_json_body_bytes=1024, usage_flush_interval=0.02)
    async with serve(config) as served:
        reader, writer = await served.connect()
        writer.write(post("/v1/chat/completions", b"{" + b" " * 2000 + b"}"))
        answer = await reader.next()
        assert answer.status == 413
        assert "/v1/chat/completions" in answer.json()["error"]["message"]  # type: ignore[index]

        reader, writer = await served.connect()  # uploads may be larger than JSON bodies
        form = (b"--b\r\ncontent-disposition: form-data; name=\"model\"\r\n\r\nm\r\n"
                b"--b\r\ncontent-disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n"
                b"\r\n" + b"\0" * 2000 + b"\r\n--b--\r\n")  # fmt: skip
        request = post("/v1/audio/transcriptions", form)
        writer.write(request.replace(b"application/json", b"multipart/form-data; boundary=b"))
        assert (await reader.next()).status == 200

        reader, writer = await served.connect()  # GET endpoints take no body
        writer.write(get("/v1/models").replace(b"\r\n\r\n", b"\r\ncontent-length: 2\r\n\r\n{}"))
        answer = await reader.next()
        assert answer.status == 413
        assert "takes no request body" in answer.json()["error"]["message"]  # type: ignore[index]

        reader, writer = await served.connect()  # client input is quoted, not echoed whole
        name = "m" * 900
        writer.write(post("/v1/chat/completions", json.dumps({"model": name}).encode()))
        answer = await reader.next()
        assert answer.status == 404
        message = answer.json()["error"]["message"]  # type: ignore[index]
        assert isinstance(message, str)
        assert "\u2026" in message
        assert len(message) < 300
        writer.write(get("/v1/" + "p" * 900))
        message = (await reader.next()).json()["error"]["message"]  # type: ignore[index]
        assert isinstance(message, str)
        assert len(message) < 300
