"""Running the gateway and stand-in upstreams on real local ports (tests, benchmarks).

``StubUpstream`` is a small OpenAI-compatible server (aiohttp) with fixed answers:
chat and text completions (JSON, or SSE with a usage event when asked), embeddings,
rerank, speech (bytes), transcriptions (multipart) and images. Its knobs make it
fail (a status such as 503, or a dropped connection), answer slowly, or stream
without end; it counts requests and the streams its clients abandoned.
``serving`` runs the gateway in the current event loop on its own server, or under
uvicorn as an ASGI app.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web

from maasbase.common.http_server import make_server
from maasbase.gateway.app import GatewayApp
from maasbase.gateway.server import GatewayServer


def _chunk(model: str, delta: dict[str, Any], finish: str | None = None) -> bytes:
    payload = {
        "id": "chatcmpl-stub", "object": "chat.completion.chunk", "created": 1, "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }  # fmt: skip
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


class StubUpstream:
    def __init__(
        self,
        name: str = "stub",
        *,
        prompt_tokens: int = 7,
        completion_tokens: int = 5,
    ) -> None:
        self.name = name
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = completion_tokens
        self.status: int | None = None  # answer every request with this status
        self.drop = False  # close the connection without answering
        self.delay = 0.0  # before answering
        self.chunk_delay = 0.0  # between stream events
        self.endless = False  # stream until the client goes away
        self.break_after: int | None = None  # drop the connection after this many stream events
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.abandoned = 0  # streams whose client went away
        self.base_url = ""
        self._runner: web.AppRunner | None = None

    @property
    def count(self) -> int:
        return len(self.requests)

    async def start(
        self, host: str = "127.0.0.1", port: int = 0, *, tls: ssl.SSLContext | None = None
    ) -> str:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/completions", self._chat)
        app.router.add_post("/v1/embeddings", self._embeddings)
        app.router.add_post("/v1/rerank", self._rerank)
        app.router.add_post("/v1/audio/speech", self._speech)
        app.router.add_post("/v1/audio/transcriptions", self._transcription)
        app.router.add_post("/v1/images/generations", self._images)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        sock = listening_socket(host, port)
        await web.SockSite(self._runner, sock, ssl_context=tls).start()
        scheme = "https" if tls else "http"
        self.base_url = f"{scheme}://{host}:{sock.getsockname()[1]}/v1"
        return self.base_url

    async def aclose(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _usage(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }

    async def _common(self, request: web.Request, body: dict[str, Any]) -> web.Response | None:
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.drop and request.transport is not None:
            request.transport.close()
            raise ConnectionResetError("stub dropped the connection")
        if self.status is not None:
            error = {"error": {"message": f"{self.name} failing", "type": "server_error"}}
            return web.json_response(error, status=self.status)
        return None

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        failed = await self._common(request, body)
        if failed is not None:
            return failed
        model = body.get("model", "")
        if not body.get("stream"):
            text = " ".join(f"tok{i}" for i in range(self.completion_tokens))
            choice: dict[str, Any] = {"index": 0, "finish_reason": "stop"}
            if request.path.endswith("/chat/completions"):
                choice["message"] = {"role": "assistant", "content": text}
            else:
                choice["text"] = text
            answer = {"id": "chatcmpl-stub", "object": "chat.completion", "created": 1,
                      "model": model, "upstream": self.name, "choices": [choice],
                      "usage": self._usage()}  # fmt: skip
            return web.json_response(answer)
        return await self._stream(request, body, model)

    async def _stream(
        self, request: web.Request, body: dict[str, Any], model: str
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        try:
            await response.write(_chunk(model, {"role": "assistant", "content": ""}))
            i = 0
            while self.endless or i < self.completion_tokens:
                if self.chunk_delay:
                    await asyncio.sleep(self.chunk_delay)
                await response.write(_chunk(model, {"content": f"tok{i} "}))
                i += 1
                if self.break_after is not None and i >= self.break_after:
                    assert request.transport is not None
                    request.transport.close()
                    return response
            await response.write(_chunk(model, {}, "stop"))
            if (body.get("stream_options") or {}).get("include_usage"):
                usage = {"id": "chatcmpl-stub", "object": "chat.completion.chunk", "created": 1,
                         "model": model, "choices": [], "usage": self._usage()}  # fmt: skip
                await response.write(b"data: " + json.dumps(usage).encode() + b"\n\n")
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
        except (ConnectionResetError, ConnectionError):
            self.abandoned += 1
        return response

    async def _embeddings(self, request: web.Request) -> web.Response:
        body = await request.json()
        failed = await self._common(request, body)
        if failed is not None:
            return failed
        inputs = body.get("input")
        count = len(inputs) if isinstance(inputs, list) else 1
        data = [{"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3]}
                for i in range(count)]  # fmt: skip
        usage = {"prompt_tokens": self.prompt_tokens, "total_tokens": self.prompt_tokens}
        return web.json_response(
            {"object": "list", "data": data, "model": body.get("model"), "usage": usage}
        )

    async def _rerank(self, request: web.Request) -> web.Response:
        body = await request.json()
        failed = await self._common(request, body)
        if failed is not None:
            return failed
        results = [{"index": i, "relevance_score": 1.0 / (i + 1)}
                   for i in range(len(body.get("documents", [])))]  # fmt: skip
        usage = {"prompt_tokens": self.prompt_tokens, "total_tokens": self.prompt_tokens}
        return web.json_response({"model": body.get("model"), "results": results, "usage": usage})

    async def _speech(self, request: web.Request) -> web.Response:
        body = await request.json()
        failed = await self._common(request, body)
        if failed is not None:
            return failed
        return web.Response(body=b"RIFF" + b"\0" * 1000, content_type="audio/wav")

    async def _transcription(self, request: web.Request) -> web.Response:
        form = await request.post()
        upload = form.get("file")
        size = len(upload.file.read()) if isinstance(upload, web.FileField) else 0
        body = {"model": str(form.get("model")), "file_bytes": size}
        failed = await self._common(request, body)
        if failed is not None:
            return failed
        return web.json_response({"text": f"{size} bytes heard by {body['model']}"})

    async def _images(self, request: web.Request) -> web.Response:
        body = await request.json()
        failed = await self._common(request, body)
        if failed is not None:
            return failed
        return web.json_response({"created": 1, "data": [{"b64_json": "aW1n"}]})


async def eventually(check: Callable[[], bool], within: float = 2.0) -> None:
    """Wait until ``check()`` holds, polling every 10 ms; AssertionError after ``within``."""
    for _ in range(int(within / 0.01)):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached in time")


def listening_socket(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # TCP_NODELAY
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    return sock


@contextlib.asynccontextmanager
async def serving(
    app: GatewayApp, host: str = "127.0.0.1", port: int = 0, *, server: str = "native"
) -> AsyncIterator[str]:
    """Serve ``app`` in this loop, on ``GatewayServer`` ("native") or uvicorn ("asgi",
    lifespan on); yields its base URL."""
    sock = listening_socket(host, port)
    url = f"http://{host}:{sock.getsockname()[1]}"
    try:
        if server == "native":
            async with _native(app, sock):
                yield url
        else:
            async with _uvicorn(app, sock):
                yield url
    finally:
        sock.close()


@contextlib.asynccontextmanager
async def _native(app: GatewayApp, sock: socket.socket) -> AsyncIterator[None]:
    native = GatewayServer(app, graceful_timeout=5)
    task = asyncio.get_running_loop().create_task(native.serve(sock))
    started = asyncio.get_running_loop().create_task(native.started.wait())
    await asyncio.wait([task, started], return_when=asyncio.FIRST_COMPLETED)
    started.cancel()
    if task.done():
        task.result()
        raise RuntimeError("the gateway server stopped before it started")
    try:
        yield
    finally:
        native.stop()
        await task


@contextlib.asynccontextmanager
async def _uvicorn(app: GatewayApp, sock: socket.socket) -> AsyncIterator[None]:
    uvicorn = make_server(app)
    task = asyncio.get_running_loop().create_task(uvicorn.serve(sockets=[sock]))
    try:
        while not uvicorn.started:
            if task.done():
                task.result()
                raise RuntimeError("uvicorn stopped before it started")
            await asyncio.sleep(0.005)
        yield
    finally:
        uvicorn.should_exit = True
        await task
