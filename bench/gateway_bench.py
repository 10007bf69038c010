"""AI gateway throughput and latency against a fixed-response stub, with nginx as the
reference proxy measured in the same run.

Layout (as in the issue): each proxy pinned to core 0 with ``taskset``; ``wrk`` and the
stub pinned to core 1. The stub is Debian's nginx returning a fixed chat completion
(an aiohttp stub when nginx is not installed). The gateway runs with the in-repo fakes
of its control-plane seams and does per request: key check (cached grant), routing,
p2c balancing over two upstream entries, usage extraction and metering.

Prints req/s (32 connections) and latency percentiles (1 connection) for: the stub
direct, the gateway (httptools upstream client, and the aiohttp one), nginx as a reverse
proxy, and LiteLLM when ``LITELLM_VENV`` names a virtualenv with ``litellm[proxy]``;
then ratios, streaming time-to-first-token direct vs through the gateway, and 1,000
concurrent streams through the gateway (errors, gateway RSS before and after).

Run: ``python bench/gateway_bench.py`` (about two minutes; needs ``wrk``, and ``nginx``
for the reference: ``apt-get install -y wrk nginx``). ``BENCH_SECONDS`` sets each wrk run.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROXY_CORE, LOAD_CORE = "0", "1"
SECONDS = int(os.environ.get("BENCH_SECONDS", "8"))
ANSWER = {
    "id": "cmpl-1", "object": "chat.completion", "created": 1, "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
}  # fmt: skip
BODY = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hello"}]})
KEY = "sk-bench"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


@contextmanager
def process(
    command: list[str], core: str, port: int, log: Path, *, start_timeout: float = 30
) -> Iterator[int]:
    with log.open("wb") as handle:
        proc = subprocess.Popen(
            ["taskset", "-c", core, *command], stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT
        )
    try:
        wait_port(port, start_timeout)
        yield proc.pid
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- the processes under test -------------------------------------------------------


def serve_gateway(port: int, upstreams: list[str], client: str, *, reuse_port: bool) -> None:
    """A gateway process with fake control-plane seams (runs in the child process)."""
    import uvicorn
    import uvloop

    from maasbase.common.routing import RoutedModel, RoutingTable, Upstream, UsageBatch
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

        async def send(self, batch: UsageBatch) -> None:
            self.records += len(batch.records)

    ups = [Upstream(id=f"u{i}", base_url=url) for i, url in enumerate(upstreams)]
    table = RoutingTable(revision="bench", models=[RoutedModel(name="m", upstreams=ups)])
    app = create_gateway_app(
        routes=FakeRoutingSource(table),
        keys=FakeKeyResolver({KEY: grant()}),
        usage=CountingSink(),
        config=GatewayConfig(upstream_client=client),
    )
    sock = reuse_port_socket("127.0.0.1", port) if reuse_port else None
    settle_garbage_collector()
    config = server_config(app, host="127.0.0.1", port=port)
    uvloop.run(uvicorn.Server(config).serve(sockets=[sock] if sock else None))


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


NGINX = """
worker_processes 1;
daemon off;
pid {dir}/{name}.pid;
error_log {dir}/{name}.error.log warn;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  client_body_temp_path {dir}/{name}-body;
  proxy_temp_path {dir}/{name}-proxy;
  fastcgi_temp_path {dir}/{name}-fcgi;
  uwsgi_temp_path {dir}/{name}-uwsgi;
  scgi_temp_path {dir}/{name}-scgi;
  keepalive_requests 10000000;
  {upstream}
  server {{
    listen 127.0.0.1:{port};
    location / {{ {location} }}
  }}
}}
"""


def nginx_stub(folder: Path, port: int) -> list[str]:
    answer = json.dumps(ANSWER).replace("'", "\\'")
    location = f"default_type application/json; return 200 '{answer}';"
    name = f"stub{port}"
    conf = NGINX.format(dir=folder, name=name, port=port, upstream="", location=location)
    (folder / f"{name}.conf").write_text(conf)
    return ["nginx", "-c", str(folder / f"{name}.conf"), "-p", str(folder)]


def nginx_proxy(folder: Path, port: int, stub_port: int) -> list[str]:
    upstream = f"upstream stub {{ server 127.0.0.1:{stub_port}; keepalive 64; }}"
    location = ('proxy_pass http://stub; proxy_http_version 1.1; '
                'proxy_set_header Connection "";')  # fmt: skip
    conf = NGINX.format(dir=folder, name="proxy", port=port, upstream=upstream, location=location)
    (folder / "proxy.conf").write_text(conf)
    return ["nginx", "-c", str(folder / "proxy.conf"), "-p", str(folder)]


def litellm(folder: Path, venv: Path, port: int, stub_port: int) -> list[str]:
    config = textwrap.dedent(f"""
        model_list:
          - model_name: m
            litellm_params:
              model: openai/m
              api_base: http://127.0.0.1:{stub_port}/v1
              api_key: none
        general_settings:
          master_key: {KEY}
    """)
    (folder / "litellm.yaml").write_text(config)
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    return [str(venv / "bin" / "litellm"), "--config", str(folder / "litellm.yaml"),
            "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"]  # fmt: skip


# --- load ---------------------------------------------------------------------------

UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def wrk(
    url: str, connections: int, seconds: int, script: Path, *, threads: int = 1, cores: str = ""
) -> dict[str, float]:
    output = subprocess.run(
        ["taskset", "-c", cores or LOAD_CORE, "wrk", f"-t{threads}", f"-c{connections}",
         f"-d{seconds}s", "--latency", "-s", str(script), url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    result = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))}  # type: ignore[union-attr]
    for pct, value, unit in re.findall(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s)\s*$", output, re.M):
        result[f"p{pct}"] = float(value) * UNITS[unit]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    result["errors"] = float(errors.group(1)) if errors else 0.0
    return result


def measure(name: str, url: str, script: Path) -> dict[str, float]:
    wrk(url, 32, 2, script)  # warm up connections and caches
    loaded = wrk(url, 32, SECONDS, script)
    single = wrk(url, 1, max(3, SECONDS // 2), script)
    row = {"rps": loaded["rps"], "errors": loaded["errors"] + single["errors"],
           "p50": single["p50"], "p99": single["p99"]}  # fmt: skip
    print(f"  {name:<34} {row['rps']:>9,.0f} req/s   p50 {row['p50']:7.3f} ms   "
          f"p99 {row['p99']:7.3f} ms   errors {row['errors']:.0f}", flush=True)  # fmt: skip
    return row


async def first_tokens(url: str, n: int) -> list[float]:
    """Milliseconds to the first streamed event, for ``n`` sequential requests."""
    from maasbase.gateway.upstream import PooledUpstreamClient

    client = PooledUpstreamClient()
    body = json.dumps({**json.loads(BODY), "stream": True, "bench_chunks": 4}).encode()
    headers = [(b"content-type", b"application/json"), (b"authorization", f"Bearer {KEY}".encode())]
    times = []
    try:
        for _ in range(n):
            start = time.perf_counter()
            response = await client.request(b"POST", url, headers, body)
            await response.next_chunk()
            times.append((time.perf_counter() - start) * 1000)
            while await response.next_chunk():
                pass
            response.release()
    finally:
        await client.aclose()
    return times


async def many_streams(url: str, count: int) -> tuple[int, int]:
    """``count`` concurrent streams of 20 events 0.1 s apart: (completed, failed)."""
    from maasbase.gateway.upstream import PooledUpstreamClient

    client = PooledUpstreamClient(max_idle_per_origin=count)
    body = json.dumps({**json.loads(BODY), "stream": True, "bench_chunks": 20,
                       "bench_delay": 0.1}).encode()  # fmt: skip
    headers = [(b"content-type", b"application/json"), (b"authorization", f"Bearer {KEY}".encode())]

    async def one() -> bool:
        response = await client.request(b"POST", url, headers, body)
        data = b""
        while chunk := await response.next_chunk():
            data += chunk
        response.release()
        return response.status == 200 and data.endswith(b"data: [DONE]\n\n")

    try:
        results = await asyncio.gather(*(one() for _ in range(count)), return_exceptions=True)
    finally:
        await client.aclose()
    done = sum(1 for r in results if r is True)
    return done, count - done


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


# --- the run ------------------------------------------------------------------------

PYTHON, ME = sys.executable, str(Path(__file__).resolve())


def chat_url(port: int) -> str:
    return f"http://127.0.0.1:{port}/v1/chat/completions"


def gateway_command(port: int, client: str, *upstreams: str) -> list[str]:
    return [PYTHON, ME, "gateway", str(port), client, *upstreams]


def proxies(stack: ExitStack, folder: Path, script: Path) -> dict[str, dict[str, float]]:
    """req/s and latency of the stub direct and of each proxy in front of it."""
    have_nginx = shutil.which("nginx") is not None
    stub_port = free_port()
    stub = nginx_stub(folder, stub_port) if have_nginx else [PYTHON, ME, "sse-stub", str(stub_port)]
    stack.enter_context(process(stub, LOAD_CORE, stub_port, folder / "stub.log"))
    stub_url = f"http://127.0.0.1:{stub_port}/v1"
    print(f"stub: {'nginx' if have_nginx else 'aiohttp'} on core {LOAD_CORE}; proxies on core "
          f"{PROXY_CORE}; wrk on core {LOAD_CORE}; {SECONDS} s per run", flush=True)  # fmt: skip
    results = {"direct": measure("stub direct", f"{stub_url}/chat/completions", script)}
    for client in ("pooled", "aiohttp"):
        port = free_port()
        command = gateway_command(port, client, stub_url, stub_url)
        with process(command, PROXY_CORE, port, folder / f"gateway-{client}.log"):
            name = f"gateway ({client} upstream client)"
            results[client] = measure(name, chat_url(port), script)
    if have_nginx:
        port = free_port()
        with process(nginx_proxy(folder, port, stub_port), PROXY_CORE, port, folder / "p.log"):
            results["nginx"] = measure("nginx reverse proxy", chat_url(port), script)
    venv = os.environ.get("LITELLM_VENV")
    if venv:
        port = free_port()
        command = litellm(folder, Path(venv), port, stub_port)
        with process(command, PROXY_CORE, port, folder / "litellm.log", start_timeout=120):
            time.sleep(3)
            results["litellm"] = measure("LiteLLM proxy", chat_url(port), script)
    return results


def ratios(results: dict[str, dict[str, float]]) -> None:
    gateway, direct = results["pooled"], results["direct"]
    print("\nratios (gateway = pooled upstream client)")
    print(f"  added latency at 1 connection: p50 {gateway['p50'] - direct['p50']:.3f} ms, "
          f"p99 {gateway['p99'] - direct['p99']:.3f} ms")  # fmt: skip
    for other in ("aiohttp", "nginx", "litellm"):
        if other in results:
            print(f"  gateway / {other}: {gateway['rps'] / results[other]['rps']:.2f}x req/s")


def streaming(stack: ExitStack, folder: Path) -> None:
    """Time to first token direct and through the gateway; 1,000 concurrent streams."""
    sse_port, port = free_port(), free_port()
    sse = [PYTHON, ME, "sse-stub", str(sse_port)]
    stack.enter_context(process(sse, LOAD_CORE, sse_port, folder / "sse.log"))
    sse_url = f"http://127.0.0.1:{sse_port}/v1"
    command = gateway_command(port, "pooled", sse_url, sse_url)
    # taskset execs the command: the pid is the gateway's own
    pid = stack.enter_context(process(command, PROXY_CORE, port, folder / "gw-sse.log"))
    direct = statistics.median(asyncio.run(first_tokens(f"{sse_url}/chat/completions", 300)))
    proxied = statistics.median(asyncio.run(first_tokens(chat_url(port), 300)))
    print("\nstreaming time to first token (300 sequential streams, p50)")
    print(f"  direct {direct:.3f} ms   through the gateway {proxied:.3f} ms   "
          f"difference {proxied - direct:.3f} ms")  # fmt: skip
    print("\n1,000 concurrent streams through the gateway (20 events 0.1 s apart each)")
    rss = [rss_mib(pid)]
    for round_ in range(3):
        start = time.perf_counter()
        done, failed = asyncio.run(many_streams(chat_url(port), 1000))
        time.sleep(1.5)
        rss.append(rss_mib(pid))
        print(f"  round {round_ + 1}: {done} completed, {failed} failed in "
              f"{time.perf_counter() - start:.1f} s; gateway RSS {rss[-1]:.1f} MiB")  # fmt: skip
    print(f"  gateway RSS: {rss[0]:.1f} MiB before, {rss[1]:.1f} after round 1, "
          f"{rss[-1]:.1f} after round 3")  # fmt: skip


def scale_out(stack: ExitStack, folder: Path, script: Path) -> None:
    """req/s with 1, 2, 4 ... gateway processes on their own cores (SO_REUSEPORT)."""
    cores = os.cpu_count() or 1
    if cores < 4:
        print(f"\nscale-out: skipped ({cores} cores; it needs 4 or more)")
        return
    load = f"{cores // 2}-{cores - 1}"
    stub_port = free_port()
    stub = [PYTHON, ME, "sse-stub", str(stub_port)]
    if shutil.which("nginx"):
        stub = nginx_stub(folder, stub_port)
    stack.enter_context(process(stub, load, stub_port, folder / "stub-scale.log"))
    stub_url = f"http://127.0.0.1:{stub_port}/v1"
    print(f"\nscale-out: gateways on cores 0..N-1, stub and wrk on cores {load}")
    base = 0.0
    count = 1
    while count <= cores // 2:
        port = free_port()
        with ExitStack() as group:
            for core in range(count):
                command = [*gateway_command(port, "pooled", stub_url, stub_url), "--reuse-port"]
                group.enter_context(process(command, str(core), port, folder / f"s{core}.log"))
            time.sleep(0.5)
            threads = max(1, count // 2)
            load_run = wrk(chat_url(port), 64 * count, SECONDS, script, threads=threads, cores=load)
            rps = load_run["rps"]
        base = base or rps
        print(f"  {count} process(es): {rps:,.0f} req/s ({rps / base:.2f}x one process)")
        count *= 2


def main() -> None:
    if shutil.which("wrk") is None:
        sys.exit("wrk is required: apt-get install -y wrk nginx")
    with tempfile.TemporaryDirectory(prefix="gw-bench-") as tmp, ExitStack() as stack:
        folder = Path(tmp)
        script = folder / "post.lua"
        script.write_text(
            f"wrk.method = 'POST'\nwrk.body = '{BODY}'\n"
            "wrk.headers['Content-Type'] = 'application/json'\n"
            f"wrk.headers['Authorization'] = 'Bearer {KEY}'\n"
        )
        ratios(proxies(stack, folder, script))
        streaming(stack, folder)
        scale_out(stack, folder, script)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "gateway":
        reuse = "--reuse-port" in sys.argv
        upstreams = [a for a in sys.argv[4:] if a != "--reuse-port"]
        serve_gateway(int(sys.argv[2]), upstreams, sys.argv[3], reuse_port=reuse)
    elif len(sys.argv) > 1 and sys.argv[1] == "sse-stub":
        serve_sse_stub(int(sys.argv[2]))
    else:
        main()
