"""The processes the gateway benchmark starts: the gateway with fake control-plane seams
(on its native server or under uvicorn), the bare aiohttp pass-through proxy the issue
names as a baseline, and an SSE stub for the streaming runs.

``python bench/gateway_children.py gateway PORT SERVER CLIENT UPSTREAM... [--reuse-port]``,
``... bare-proxy PORT ORIGIN`` or ``... sse-stub PORT``.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sys
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from maasbase.gateway.app import GatewayApp

ANSWER = {
    "id": "cmpl-1", "object": "chat.completion", "created": 1, "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
}  # fmt: skip
BODY = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hello"}]})
KEY = "sk-bench"


def serve_gateway(
    port: int, upstreams: list[str], client: str, server: str, *, reuse_port: bool
) -> None:
    """A gateway process with fake control-plane seams on the ``native`` server or on
    ``uvicorn`` (runs in the child process)."""
    import uvloop

    from maasbase.common.routing import RoutedModel, RoutingTable, Upstream, Usage
    from maasbase.gateway.app import create_gateway_app
    from maasbase.gateway.config import GatewayConfig
    from maasbase.gateway.fakes import FakeKeyResolver, FakeRoutingSource, grant
    from maasbase.gateway.standalone import (
        reuse_port_socket,
        server_config,
        settle_garbage_collector,
    )

    class CountingSink:
        records = 0

        async def send(self, usages: list[Usage]) -> None:
            self.records += len(usages)

    ups = [Upstream(id=f"u{i}", base_url=url) for i, url in enumerate(upstreams)]
    table = RoutingTable(revision="bench", models=[RoutedModel(name="m", upstreams=ups)])
    app = create_gateway_app(
        routes=FakeRoutingSource(table),
        keys=FakeKeyResolver({KEY: grant()}),
        usage=CountingSink(),
        config=GatewayConfig(upstream_client=client),
    )
    if server == "native":
        uvloop.run(serve_native(app, reuse_port_socket("127.0.0.1", port)))
        return
    import uvicorn

    sock = reuse_port_socket("127.0.0.1", port) if reuse_port else None
    settle_garbage_collector()
    config = server_config(app, host="127.0.0.1", port=port)
    uvloop.run(uvicorn.Server(config).serve(sockets=[sock] if sock else None))


async def serve_native(app: GatewayApp, sock: socket.socket) -> None:
    """The gateway's own server on ``sock`` until SIGTERM or SIGINT."""
    from maasbase.gateway.server import GatewayServer
    from maasbase.gateway.standalone import settle_garbage_collector

    server = GatewayServer(app)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, server.stop)
    settle_garbage_collector()
    try:
        await server.serve(sock)
    finally:
        sock.close()


def serve_bare_proxy(port: int, origin: str) -> None:
    """The baseline the issue names: an aiohttp server forwarding each request body to
    ``origin`` through one keep-alive ClientSession; no auth, no metering (child process)."""
    import aiohttp
    import uvloop
    from aiohttp import web

    session = web.AppKey("session", aiohttp.ClientSession)

    async def client(app: web.Application) -> AsyncIterator[None]:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as opened:
            app[session] = opened
            yield

    async def forward(request: web.Request) -> web.Response:
        headers = {"Content-Type": request.headers.get("Content-Type", "application/json")}
        url, body = origin + request.path_qs, await request.read()
        async with request.app[session].post(url, data=body, headers=headers) as upstream:
            answer = await upstream.read()
        return web.Response(body=answer, status=upstream.status, content_type=upstream.content_type)

    app = web.Application()
    app.cleanup_ctx.append(client)
    app.router.add_post("/{path:.*}", forward)
    web.run_app(
        app, host="127.0.0.1", port=port, print=None, access_log=None, loop=uvloop.new_event_loop()
    )


def serve_sse_stub(port: int) -> None:
    """Streams ``bench_chunks`` events, ``bench_delay`` seconds apart (child process)."""
    import uvloop
    from aiohttp import web

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if not body.get("stream"):
            return web.json_response(ANSWER)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        chunk = {"object": "chat.completion.chunk",
                 "choices": [{"index": 0, "delta": {"content": "tok"}}]}  # fmt: skip
        event = b"data: " + json.dumps(chunk).encode() + b"\n\n"
        for i in range(int(body.get("bench_chunks", 8))):
            if i:
                await asyncio.sleep(float(body.get("bench_delay", 0)))
            await response.write(event)
        usage = {"choices": [], "usage": ANSWER["usage"]}
        await response.write(b"data: " + json.dumps(usage).encode() + b"\n\ndata: [DONE]\n\n")
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    web.run_app(
        app, host="127.0.0.1", port=port, print=None, access_log=None, loop=uvloop.new_event_loop()
    )


def main(args: list[str]) -> None:
    if args[:1] == ["gateway"]:  # gateway PORT SERVER CLIENT UPSTREAM... [--reuse-port]
        upstreams = [arg for arg in args[4:] if arg != "--reuse-port"]
        serve_gateway(int(args[1]), upstreams, args[3], args[2], reuse_port="--reuse-port" in args)
    elif args[:1] == ["bare-proxy"]:  # bare-proxy PORT ORIGIN
        serve_bare_proxy(int(args[1]), args[2])
    elif args[:1] == ["sse-stub"]:  # sse-stub PORT
        serve_sse_stub(int(args[1]))
    else:
        sys.exit(f"unknown child process {args!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
