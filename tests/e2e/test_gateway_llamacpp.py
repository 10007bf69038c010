"""The gateway in front of real llama.cpp servers (the embedded launcher, a tiny
random-weights GGUF on CPU), driven by the official ``openai`` SDK.

Routing, keys and usage go through the in-repo fakes of the control-plane seams. One
route reaches the chat engine through a worker's data-plane proxy, as deployments do.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import openai
import pytest
from starlette.applications import Starlette

from maasbase.common.http_server import make_server
from maasbase.common.routing import RoutedModel, RoutingTable, Upstream, UsageRecord
from maasbase.gateway.app import create_gateway_app
from maasbase.gateway.config import GatewayConfig
from maasbase.gateway.fakes import FakeKeyResolver, FakeRoutingSource, MemoryUsageSink, grant
from maasbase.gateway.testing import listening_socket, serving
from maasbase.worker.dataplane import DataPlane
from tests.support.tiny_gguf import write_tiny_gguf

pytestmark = pytest.mark.e2e

CHAT = [{"role": "user", "content": "Say hello."}]
DATA_PLANE_SECRET = "e2e-data-plane-secret"
PROXIED_INSTANCE = 4


def free_port() -> int:
    sock = listening_socket()
    port: int = sock.getsockname()[1]
    sock.close()
    return port


def healthy(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.TransportError:
        return False


@pytest.fixture(scope="module")
def engines(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A chat server and an embedding server, started together; their base URLs."""
    folder = tmp_path_factory.mktemp("llamacpp")
    model = write_tiny_gguf(folder / "tiny.gguf")
    flags = {"chat": [], "embed": ["--embedding", "--pooling", "mean"]}
    procs: dict[str, tuple[subprocess.Popen[bytes], int, Path]] = {}
    try:
        for name, extra in flags.items():
            port = free_port()
            log = folder / f"{name}.log"
            command = [sys.executable, "-m", "maasbase.backends.llamacpp_launcher", "-m",
                       str(model), "--host", "127.0.0.1", "--port", str(port), "--alias", "tiny",
                       "-c", "512", "-np", "2", "--metrics", *extra]  # fmt: skip
            with log.open("wb") as handle:
                proc = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT)
            procs[name] = (proc, port, log)
        for proc, port, log in procs.values():
            for _ in range(600):
                assert proc.poll() is None, log.read_text()[-3000:]
                if healthy(f"http://127.0.0.1:{port}/health"):
                    break
                time.sleep(0.05)
            else:
                raise AssertionError(f"llama.cpp did not start:\n{log.read_text()[-3000:]}")
        yield {name: f"http://127.0.0.1:{port}/v1" for name, (_, port, _) in procs.items()}
    finally:
        for proc, _, _ in procs.values():
            proc.terminate()
        for proc, _, _ in procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@dataclass
class Gateway:
    url: str
    usage: MemoryUsageSink

    def client(self, key: str = "sk-e2e") -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=0)

    async def records(self, count: int) -> list[UsageRecord]:
        for _ in range(300):
            if len(self.usage.records) >= count:
                break
            await asyncio.sleep(0.01)
        assert len(self.usage.records) == count
        return self.usage.records


@asynccontextmanager
async def worker_proxy(engine: str) -> AsyncIterator[str]:
    """A worker's data-plane proxy in front of ``engine``; the upstream base URL."""
    ports = {PROXIED_INSTANCE: urlsplit(engine).port}
    dataplane = DataPlane(Starlette(), secret=lambda: DATA_PLANE_SECRET, port_of=ports.get)
    sock = listening_socket()
    server = make_server(dataplane)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            assert not task.done(), "the worker proxy did not start"
            await asyncio.sleep(0.005)
        port = sock.getsockname()[1]
        yield f"http://127.0.0.1:{port}/proxy/instances/{PROXIED_INSTANCE}/v1"
    finally:
        server.should_exit = True
        await task
        await dataplane.aclose()
        sock.close()


@pytest.fixture
async def gateway(engines: dict[str, str]) -> AsyncIterator[Gateway]:
    async with worker_proxy(engines["chat"]) as proxied, _gateway(engines, proxied) as gateway:
        yield gateway


@asynccontextmanager
async def _gateway(engines: dict[str, str], proxied: str) -> AsyncIterator[Gateway]:
    table = RoutingTable(
        revision="1",
        models=[
            RoutedModel(
                name="tiny-proxied",
                upstreams=[
                    Upstream(
                        id="instance:4",
                        base_url=proxied,
                        api_key=DATA_PLANE_SECRET,
                        upstream_model="tiny",
                    )
                ],
            ),
            RoutedModel(
                name="tiny", upstreams=[Upstream(id="instance:1", base_url=engines["chat"])]
            ),
            RoutedModel(
                name="tiny-messages",
                upstreams=[
                    Upstream(
                        id="instance:3",
                        base_url=engines["chat"],
                        upstream_model="tiny",
                        anthropic_messages=True,
                    )
                ],
            ),
            RoutedModel(
                name="tiny-embed",
                categories=["embedding"],
                upstreams=[
                    Upstream(id="instance:2", base_url=engines["embed"], upstream_model="tiny")
                ],
            ),
        ],
    )
    keys = FakeKeyResolver(
        {"sk-e2e": grant(1), "sk-embed-only": grant(2, allowed_models=["tiny-embed"])}
    )
    usage = MemoryUsageSink()
    app = create_gateway_app(
        routes=FakeRoutingSource(table),
        keys=keys,
        usage=usage,
        config=GatewayConfig(usage_flush_interval=0.02),
    )
    async with serving(app) as url:
        yield Gateway(url, usage)


async def test_chat(gateway: Gateway) -> None:
    async with gateway.client() as sdk:
        reply = await sdk.chat.completions.create(model="tiny", messages=CHAT, max_tokens=8)  # type: ignore[arg-type]
    assert reply.model == "tiny"
    assert isinstance(reply.choices[0].message.content, str)
    assert reply.usage is not None
    assert 0 < reply.usage.completion_tokens <= 8
    (record,) = await gateway.records(1)
    assert (record.prompt_tokens, record.completion_tokens) == (
        reply.usage.prompt_tokens,
        reply.usage.completion_tokens,
    )
    assert (record.upstream_id, record.status, record.stream) == ("instance:1", 200, False)


async def test_streaming_chat_meters_the_engines_counts(
    gateway: Gateway, engines: dict[str, str]
) -> None:
    request = {"model": "tiny", "messages": CHAT, "max_tokens": 12, "temperature": 0, "seed": 1}
    async with gateway.client() as sdk:
        stream = await sdk.chat.completions.create(**request, stream=True)  # type: ignore[call-overload]
        chunks = [chunk async for chunk in stream]
        asked = await sdk.chat.completions.create(
            **request, stream=True, stream_options={"include_usage": True}
        )  # type: ignore[call-overload]
        asked_chunks = [chunk async for chunk in asked]
    assert all(c.usage is None for c in chunks)  # not asked for: not shown
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    engine_usage = asked_chunks[-1].usage
    assert engine_usage is not None
    quiet, shown = await gateway.records(2)
    for record in (quiet, shown):
        assert record.stream
        assert (record.prompt_tokens, record.completion_tokens) == (
            engine_usage.prompt_tokens,
            engine_usage.completion_tokens,
        )
        assert record.ttft_ms is not None
        assert record.ttft_ms <= record.latency_ms


async def test_streaming_chat_through_a_worker_proxy(gateway: Gateway) -> None:
    """Deployments are reached through their worker's data-plane proxy: the stream and
    the engine's token counts come through it unchanged."""
    request = {"model": "tiny-proxied", "messages": CHAT, "max_tokens": 8}
    async with gateway.client() as sdk:
        stream = await sdk.chat.completions.create(
            **request, stream=True, stream_options={"include_usage": True}
        )  # type: ignore[call-overload]
        chunks = [chunk async for chunk in stream]
        reply = await sdk.chat.completions.create(**request)  # type: ignore[call-overload]
    assert len([c for c in chunks if c.choices]) > 1  # event by event, not one lump
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    usage = chunks[-1].usage
    assert usage is not None
    assert 0 < usage.completion_tokens <= 8
    assert reply.usage is not None
    streamed, whole = await gateway.records(2)
    assert (streamed.upstream_id, streamed.status, streamed.stream) == ("instance:4", 200, True)
    assert streamed.completion_tokens == usage.completion_tokens
    assert (whole.status, whole.completion_tokens) == (200, reply.usage.completion_tokens)


async def test_completions(gateway: Gateway) -> None:
    async with gateway.client() as sdk:
        completion = await sdk.completions.create(model="tiny", prompt="Once upon", max_tokens=6)
    assert completion.usage is not None
    assert completion.usage.completion_tokens <= 6
    (record,) = await gateway.records(1)
    assert record.endpoint == "completions"
    assert record.completion_tokens == completion.usage.completion_tokens


async def test_embeddings_through_a_renamed_upstream(gateway: Gateway) -> None:
    async with gateway.client("sk-embed-only") as sdk:
        result = await sdk.embeddings.create(model="tiny-embed", input=["hello", "world"])
        assert [m.id for m in (await sdk.models.list()).data] == ["tiny-embed"]
    assert len(result.data) == 2
    assert len(result.data[0].embedding) == 64  # the tiny model's hidden size
    (record,) = await gateway.records(1)
    assert record.endpoint == "embeddings"
    assert record.prompt_tokens == result.usage.prompt_tokens > 0


async def test_errors(gateway: Gateway) -> None:
    async with gateway.client("sk-nope") as wrong:
        with pytest.raises(openai.AuthenticationError):
            await wrong.chat.completions.create(model="tiny", messages=CHAT)  # type: ignore[arg-type]
    async with gateway.client("sk-embed-only") as restricted:
        with pytest.raises(openai.PermissionDeniedError):
            await restricted.chat.completions.create(model="tiny", messages=CHAT)  # type: ignore[arg-type]
    async with httpx.AsyncClient() as http:
        bad = await http.post(
            f"{gateway.url}/v1/chat/completions",
            content=b'{"model": "tiny", "messages": ',
            headers={"Authorization": "Bearer sk-e2e"},
        )
    assert bad.status_code == 400
    assert bad.json()["error"]["type"] == "invalid_request_error"


async def test_anthropic_messages_pass_through_to_an_engine_that_serves_them(
    gateway: Gateway,
) -> None:
    body = {"model": "tiny-messages", "max_tokens": 6, "messages": CHAT}
    headers = {"x-api-key": "sk-e2e", "anthropic-version": "2023-06-01"}
    async with httpx.AsyncClient(base_url=gateway.url, timeout=60) as http:
        reply = await http.post("/v1/messages", json=body, headers=headers)
        assert reply.status_code == 200, reply.text
        message = reply.json()
        assert message["type"] == "message"
        assert message["content"][0]["type"] == "text"
        assert message["model"] == "tiny"  # llama.cpp's own answer, not a translation
        streamed = await http.post("/v1/messages", json=body | {"stream": True}, headers=headers)
    events = [line.removeprefix("event: ") for line in streamed.text.splitlines()
              if line.startswith("event: ")]  # fmt: skip
    assert events[0] == "message_start"
    assert events[-1] == "message_stop"
    assert "content_block_delta" in events
    plain, stream = await gateway.records(2)
    usage = message["usage"]
    assert plain.prompt_tokens == usage["input_tokens"] + usage.get("cache_read_input_tokens", 0)
    assert plain.completion_tokens == usage["output_tokens"] == 6
    assert (stream.endpoint, stream.stream, stream.status) == ("messages", True, 200)
    assert stream.prompt_tokens == plain.prompt_tokens  # cached prompt tokens count too
    assert stream.completion_tokens == 6
