"""The gateway's OpenAI-compatible API, driven by the official ``openai`` SDK.

Every test runs twice: the gateway on its own HTTP server and under uvicorn (the ASGI
path ``maas-base start`` mounts), each on a real port; its control-plane seams are the
in-repo fakes (``maasbase.gateway.fakes``), its upstreams are stub OpenAI servers on
real ports.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import openai
import pytest

from maasbase.common.routing import UNKNOWN_MODEL, UsageRecord
from maasbase.gateway.app import GatewayApp, create_gateway_app
from maasbase.gateway.config import GatewayConfig
from maasbase.gateway.fakes import (
    FakeKeyResolver,
    FakeRoutingSource,
    MemoryUsageSink,
    grant,
    routing_table,
)
from maasbase.gateway.testing import StubUpstream, serving

pytestmark = pytest.mark.integration

CHAT = [{"role": "user", "content": "Say hello."}]


@dataclass
class Gateway:
    url: str
    app: GatewayApp
    routes: FakeRoutingSource
    usage: MemoryUsageSink
    stubs: list[StubUpstream]

    def client(self, key: str = "sk-good") -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=0)

    async def records(self, count: int) -> list[UsageRecord]:
        for _ in range(200):
            if len(self.usage.records) >= count:
                break
            await asyncio.sleep(0.01)
        return self.usage.records


@pytest.fixture(params=["native", "asgi"])
async def gateway(request: pytest.FixtureRequest) -> AsyncIterator[Gateway]:
    stubs = [StubUpstream("s0"), StubUpstream("s1")]
    for stub in stubs:
        await stub.start()
    routes = FakeRoutingSource(
        routing_table(
            "1", {"m": [s.base_url for s in stubs], "other": [stubs[0].base_url], "idle": []}
        )
    )
    keys = FakeKeyResolver({
        "sk-good": grant(1),
        "sk-other-only": grant(2, allowed_models=["other"]),
        "sk-management": grant(3, scope="management"),
    })  # fmt: skip
    usage = MemoryUsageSink()
    config = GatewayConfig(usage_flush_interval=0.02)
    app = create_gateway_app(routes=routes, keys=keys, usage=usage, config=config)
    try:
        async with serving(app, server=request.param) as url:
            yield Gateway(url, app, routes, usage, stubs)
    finally:
        for stub in stubs:
            await stub.aclose()


@pytest.fixture
async def client(gateway: Gateway) -> AsyncIterator[openai.AsyncOpenAI]:
    async with gateway.client() as sdk:
        yield sdk


async def test_chat_completion(gateway: Gateway, client: openai.AsyncOpenAI) -> None:
    reply = await client.chat.completions.create(model="m", messages=CHAT)  # type: ignore[arg-type]
    assert reply.choices[0].message.content == "tok0 tok1 tok2 tok3 tok4"
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (7, 5)
    stub = next(s for s in gateway.stubs if s.count)
    assert stub.requests[0]["messages"] == CHAT
    assert "sk-good" not in json.dumps(stub.headers[0])  # the client's key stays here
    (record,) = await gateway.records(1)
    assert (record.endpoint, record.model, record.status) == ("chat.completions", "m", 200)
    assert (record.prompt_tokens, record.completion_tokens, record.stream) == (7, 5, False)
    assert (record.api_key_id, record.user_id) == (1, 1)
    assert record.upstream_id == f"up:{stub.base_url}"
    assert record.latency_ms > 0


async def test_streaming_chat_strips_usage_the_client_did_not_ask_for(
    gateway: Gateway, client: openai.AsyncOpenAI
) -> None:
    stream = await client.chat.completions.create(model="m", messages=CHAT, stream=True)  # type: ignore[arg-type]
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "tok0 tok1 tok2 tok3 tok4 "
    assert all(c.usage is None and c.choices for c in chunks)
    stub = next(s for s in gateway.stubs if s.count)
    assert stub.requests[0]["stream_options"] == {"include_usage": True}
    (record,) = await gateway.records(1)
    assert (record.prompt_tokens, record.completion_tokens, record.stream) == (7, 5, True)
    assert record.ttft_ms is not None
    assert 0 < record.ttft_ms <= record.latency_ms


async def test_streaming_chat_keeps_usage_the_client_asked_for(
    gateway: Gateway, client: openai.AsyncOpenAI
) -> None:
    stream = await client.chat.completions.create(
        model="m",
        messages=CHAT,  # type: ignore[arg-type]
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == 12
    (record,) = await gateway.records(1)
    assert record.completion_tokens == 5


async def test_completions_embeddings_and_images(
    gateway: Gateway, client: openai.AsyncOpenAI
) -> None:
    completion = await client.completions.create(model="m", prompt="Once", max_tokens=5)
    assert completion.choices[0].text.startswith("tok0")
    embedding = await client.embeddings.create(model="m", input=["a", "b"])
    assert len(embedding.data) == 2
    assert embedding.usage.prompt_tokens == 7
    image = await client.images.generate(model="m", prompt="a cat")
    assert image.data
    assert image.data[0].b64_json == "aW1n"
    records = await gateway.records(3)
    assert sorted(r.endpoint for r in records) == [
        "completions", "embeddings", "images.generations"
    ]  # fmt: skip


async def test_audio_and_rerank(gateway: Gateway, client: openai.AsyncOpenAI) -> None:
    speech = await client.audio.speech.create(model="m", voice="alloy", input="hi")
    assert speech.content.startswith(b"RIFF")
    audio = b"RIFF" + bytes(range(256)) * 40
    text = await client.audio.transcriptions.create(model="m", file=("a.wav", audio))
    assert text.text == f"{len(audio)} bytes heard by m"
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        ranked = await http.post(
            "/v1/rerank",
            json={"model": "m", "query": "q", "documents": ["a", "b"]},
            headers={"Authorization": "Bearer sk-good"},
        )
    assert ranked.status_code == 200
    assert len(ranked.json()["results"]) == 2


async def test_models_lists_only_what_the_key_may_use(gateway: Gateway) -> None:
    async with gateway.client() as everything, gateway.client("sk-other-only") as restricted:
        assert sorted(m.id for m in (await everything.models.list()).data) == ["idle", "m", "other"]
        assert [m.id for m in (await restricted.models.list()).data] == ["other"]
        assert (await restricted.models.retrieve("other")).id == "other"
        with pytest.raises(openai.NotFoundError):
            await restricted.models.retrieve("m")


async def test_errors_have_the_openai_shape(gateway: Gateway, client: openai.AsyncOpenAI) -> None:
    async def fails(sdk: openai.AsyncOpenAI, model: str) -> openai.APIStatusError:
        with pytest.raises(openai.APIStatusError) as caught:
            await sdk.chat.completions.create(model=model, messages=CHAT)  # type: ignore[arg-type]
        return caught.value

    async with gateway.client("sk-wrong") as wrong, gateway.client("sk-other-only") as other:
        bad_key = await fails(wrong, "m")
        assert bad_key.status_code == 401
        assert bad_key.code == "invalid_api_key"
        assert bad_key.type == "authentication_error"
        denied = await fails(other, "m")
        assert (denied.status_code, denied.code) == (403, "model_not_allowed")
    async with gateway.client("sk-management") as management:
        assert (await fails(management, "m")).status_code == 403
    unknown = await fails(client, "no-such-model")
    assert (unknown.status_code, unknown.code) == (404, "model_not_found")
    assert "GET /v1/models" in unknown.message
    idle = await fails(client, "idle")
    assert (idle.status_code, idle.code) == (503, "model_unavailable")
    assert "no running instance" in idle.message
    # Refused requests of keys valid for inference are metered too (a model the gateway
    # does not serve under a placeholder, not the name sent); a bad key, or one without
    # the inference scope, has no one to bill.
    records = await gateway.records(3)
    assert sorted((r.api_key_id, r.model, r.status) for r in records) == [
        (1, UNKNOWN_MODEL, 404),
        (1, "idle", 503),
        (2, "m", 403),
    ]


@pytest.mark.parametrize(
    ("body", "headers", "status", "param"),
    [
        (b"{not json", {}, 400, None),
        (b'{"messages": []}', {}, 400, "model"),
        (b'{"model": "m"}', {"Authorization": "Basic abc"}, 401, None),
    ],
)
async def test_bad_requests(
    gateway: Gateway, body: bytes, headers: dict[str, str], status: int, param: str | None
) -> None:
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        response = await http.post(
            "/v1/chat/completions",
            content=body,
            headers={"Authorization": "Bearer sk-good", "Content-Type": "application/json"}
            | headers,
        )
    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) == {"message", "type", "code", "param"}
    assert error["param"] == param


async def test_unknown_paths_and_methods(gateway: Gateway) -> None:
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        assert (await http.get("/v1/nothing")).status_code == 404
        assert (await http.get("/v1/chat/completions")).status_code == 405
        assert (await http.get("/readyz")).json()["revision"] == "1"


async def test_anthropic_messages(gateway: Gateway) -> None:
    body = {"model": "m", "max_tokens": 16, "system": "Be brief.", "messages": CHAT}
    headers = {"x-api-key": "sk-good", "anthropic-version": "2023-06-01"}
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        message = (await http.post("/v1/messages", json=body, headers=headers)).json()
        assert message["type"] == "message"
        assert message["content"] == [{"type": "text", "text": "tok0 tok1 tok2 tok3 tok4"}]
        assert message["usage"] == {"input_tokens": 7, "output_tokens": 5}
        stub = next(s for s in gateway.stubs if s.count)
        assert stub.requests[0]["messages"][0] == {"role": "system", "content": "Be brief."}
        streamed = await http.post("/v1/messages", json=body | {"stream": True}, headers=headers)
        events = [json.loads(line[6:]) for line in streamed.text.splitlines()
                  if line.startswith("data: ")]  # fmt: skip
        text = "".join(
            e["delta"].get("text", "") for e in events if e["type"] == "content_block_delta"
        )
        assert text == "tok0 tok1 tok2 tok3 tok4 "
        assert events[-2]["usage"] == {"input_tokens": 7, "output_tokens": 5}
        assert events[-1] == {"type": "message_stop"}
        missing = await http.post(
            "/v1/messages", json={"model": "m", "messages": CHAT}, headers=headers
        )
        assert missing.status_code == 400
        assert missing.json()["type"] == "error"
        assert missing.json()["error"]["type"] == "invalid_request_error"
    records = await gateway.records(3)
    assert [(r.endpoint, r.status, r.prompt_tokens, r.completion_tokens) for r in records] == [
        ("messages", 200, 7, 5), ("messages", 200, 7, 5), ("messages", 400, 0, 0)
    ]  # fmt: skip


async def test_mounted_under_a_prefix_stripping_router(gateway: Gateway) -> None:
    """A control plane may mount the app at /v1 with a router that strips the prefix."""
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "GET",
        "path": "/models",
        "root_path": "/v1",
        "headers": [(b"authorization", b"Bearer sk-good")],
    }
    await gateway.app(scope, receive, send)  # type: ignore[arg-type]
    assert sent[0]["status"] == 200
    body = json.loads(sent[1]["body"])  # type: ignore[arg-type]
    assert sorted(m["id"] for m in body["data"]) == ["idle", "m", "other"]
