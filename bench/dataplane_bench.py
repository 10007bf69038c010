"""What the worker's data-plane proxy adds to a request.

Rows, each against a stub engine that answers a fixed small chat-completion JSON:

- ``direct``: to the stub;
- ``worker proxy``: through the worker's data-plane proxy (uvicorn + ``DataPlane``);
- ``gateway``: through the gateway (native server) straight to the stub, as before;
- ``gateway + worker proxy``: through the gateway and then the worker proxy, as
  deployments are reached now.

For each: p50/p99 latency at 1 connection, then req/s at ``BENCH_CONNECTIONS``
(default 4) keep-alive connections, ``BENCH_SECONDS`` (default 5) seconds each, with the
CPU time each server process spent per request under that load (the figure least moved
by other work on the machine). Every server runs in its own process on uvloop, as in
production; the load comes from this process (a raw asyncio HTTP/1.1 client). Other
work on the machine moves latency and req/s: compare rows of one run, not runs.

``python bench/dataplane_bench.py`` (children: ``... stub PORT``, ``... proxy PORT
STUB_PORT``, ``... gateway PORT STUB_PORT PROXY_PORT``).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SECONDS = float(os.environ.get("BENCH_SECONDS", "5"))
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "4"))
SECRET = "bench-data-plane-secret"
KEY = "sk-bench"
INSTANCE = 1
ANSWER = json.dumps({
    "id": "cmpl-1", "object": "chat.completion", "created": 1, "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
}).encode()  # fmt: skip
BODY = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hello"}]}).encode()


# -- children ------------------------------------------------------------------------


async def serve_stub(port: int) -> None:
    """A keep-alive HTTP/1.1 server that answers every request with ANSWER."""
    response = (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
        % (len(ANSWER), ANSWER)
    )

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                await reader.readexactly(length)
                writer.write(response)
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


async def serve_proxy(port: int, stub_port: int) -> None:
    from starlette.applications import Starlette

    from maasbase.common.http_server import bind, make_server
    from maasbase.worker.dataplane import DataPlane

    app = DataPlane(Starlette(), secret=lambda: SECRET, port_of={INSTANCE: stub_port}.get)
    sock = bind("127.0.0.1", port, what="proxy", flag="-")
    await make_server(app).serve(sockets=[sock])


async def serve_gateway(port: int, stub_port: int, proxy_port: int) -> None:
    from maasbase.common.routing import RoutedModel, RoutingTable, Upstream
    from maasbase.gateway.app import create_gateway_app
    from maasbase.gateway.fakes import FakeKeyResolver, FakeRoutingSource, MemoryUsageSink, grant
    from maasbase.gateway.server import GatewayServer
    from maasbase.gateway.testing import listening_socket

    proxied = f"http://127.0.0.1:{proxy_port}/proxy/instances/{INSTANCE}/v1"
    table = RoutingTable(
        revision="bench",
        models=[
            RoutedModel(
                name="direct",
                upstreams=[Upstream(id="d", base_url=f"http://127.0.0.1:{stub_port}/v1")],
            ),
            RoutedModel(
                name="proxied", upstreams=[Upstream(id="p", base_url=proxied, api_key=SECRET)]
            ),
        ],
    )
    app = create_gateway_app(
        routes=FakeRoutingSource(table),
        keys=FakeKeyResolver({KEY: grant()}),
        usage=MemoryUsageSink(),
    )
    server = GatewayServer(app)
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, server.stop)
    await server.serve(listening_socket("127.0.0.1", port))


def child(args: list[str]) -> None:
    import uvloop

    role, ports = args[0], [int(a) for a in args[1:]]
    servers = {"stub": serve_stub, "proxy": serve_proxy, "gateway": serve_gateway}
    uvloop.run(servers[role](*ports))  # type: ignore[operator]


# -- load ----------------------------------------------------------------------------


class Connection:
    def __init__(self, port: int, request: bytes) -> None:
        self.port = port
        self.request = request

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        sock = self.writer.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    async def call(self) -> int:
        self.writer.write(self.request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        await self.reader.readexactly(length)
        return int(head[9:12])

    def close(self) -> None:
        self.writer.close()


def request_bytes(path: str, headers: dict[str, str], body: bytes) -> bytes:
    lines = [
        f"POST {path} HTTP/1.1",
        "host: bench",
        "content-type: application/json",
        f"content-length: {len(body)}",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def latency(port: int, request: bytes) -> tuple[float, float, int]:
    """p50 and p99 in ms at one connection, and the number of non-200 answers."""
    conn = Connection(port, request)
    await conn.open()
    for _ in range(50):  # warm pools and caches
        await conn.call()
    times: list[float] = []
    errors = 0
    deadline = time.perf_counter() + SECONDS
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        errors += await conn.call() != 200
        times.append((time.perf_counter() - start) * 1000)
    conn.close()
    cuts = statistics.quantiles(times, n=100)
    return cuts[49], cuts[98], errors


async def throughput(port: int, request: bytes) -> tuple[float, int, int]:
    """Requests per second at CONNECTIONS connections, the number of non-200 answers, and
    the number of requests."""
    conns = [Connection(port, request) for _ in range(CONNECTIONS)]
    await asyncio.gather(*(c.open() for c in conns))
    deadline = time.perf_counter() + SECONDS
    counts = [0, 0]

    async def drive(conn: Connection) -> None:
        while time.perf_counter() < deadline:
            counts[0] += 1
            counts[1] += await conn.call() != 200

    start = time.perf_counter()
    await asyncio.gather(*(drive(c) for c in conns))
    elapsed = time.perf_counter() - start
    for conn in conns:
        conn.close()
    return counts[0] / elapsed, counts[1], counts[0]


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    import psutil

    return {name: sum(psutil.Process(pid).cpu_times()[:2]) for name, pid in pids.items()}


# -- main ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def spawn(*args: str) -> Iterator[int]:
    port = int(args[1])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, __file__, *args], cwd=ROOT, env=env)
    try:
        deadline = time.monotonic() + 30
        while True:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{args[0]} did not start")
            time.sleep(0.05)
        yield proc.pid
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> None:
    stub, proxy, gateway = free_port(), free_port(), free_port()
    chat = "/v1/chat/completions"
    secret = {"authorization": f"Bearer {SECRET}"}
    key = {"authorization": f"Bearer {KEY}"}
    rows = {
        "direct": (stub, request_bytes(chat, {}, BODY)),
        "worker proxy": (proxy, request_bytes(f"/proxy/instances/{INSTANCE}{chat}", secret, BODY)),
        "gateway": (gateway, request_bytes(chat, key, BODY.replace(b'"m"', b'"direct"'))),
        "gateway + worker proxy": (
            gateway,
            request_bytes(chat, key, BODY.replace(b'"m"', b'"proxied"')),
        ),
    }
    print(f"{SECONDS:.0f} s per measure, {CONNECTIONS} connections for req/s, "
          f"{os.cpu_count()} CPUs", flush=True)  # fmt: skip
    with ExitStack() as stack:
        pids = {
            "stub": stack.enter_context(spawn("stub", str(stub))),
            "proxy": stack.enter_context(spawn("proxy", str(proxy), str(stub))),
            "gateway": stack.enter_context(spawn("gateway", str(gateway), str(stub), str(proxy))),
        }
        results: dict[str, tuple[float, float, float]] = {}
        for name, (port, request) in rows.items():
            p50, p99, bad = asyncio.run(latency(port, request))
            before = cpu_seconds(pids)
            rps, bad_loaded, count = asyncio.run(throughput(port, request))
            after = cpu_seconds(pids)
            cpu = "  ".join(
                f"{who} {(after[who] - before[who]) / count * 1e6:4.0f}"
                for who in pids
                if after[who] - before[who] > 0.01
            )
            results[name] = (p50, p99, rps)
            print(f"  {name:<24} p50 {p50:7.3f} ms   p99 {p99:7.3f} ms   {rps:7,.0f} req/s   "
                  f"CPU µs/request: {cpu}   non-200 {bad + bad_loaded}", flush=True)  # fmt: skip
    for base, via in (("direct", "worker proxy"), ("gateway", "gateway + worker proxy")):
        added = results[via][0] - results[base][0]
        print(f"  the worker proxy adds {added * 1000:,.0f} µs at p50 to '{base}'; "
              f"req/s {results[via][2] / results[base][2]:.0%} of it")  # fmt: skip


if __name__ == "__main__":
    if len(sys.argv) > 1:
        child(sys.argv[1:])
    else:
        main()
