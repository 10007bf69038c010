"""The gateway's bounds at its edges, on both servers that carry it: its own HTTP/1.1
server and uvicorn (the ASGI path ``maas-base start`` mounts on the control plane's port).

A real HTTP client (httpx) against the gateway on a real port, a stub upstream behind
it: upstream answers over ``max_response_bytes`` are refused (or cut once started),
upstreams that break mid-stream cut the client's connection so that the truncation
shows, request bodies are capped per route, and error messages quote client input only
up to a bound. The native server's byte-level behaviour (pipelining, deadlines, the
connection cap) is tested in ``test_gateway_server.py``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest

from maasbase.common.routing import RoutedModel, Upstream
from maasbase.gateway.app import create_gateway_app
from maasbase.gateway.config import GatewayConfig
from maasbase.gateway.fakes import FakeKeyResolver, FakeRoutingSource, MemoryUsageSink, grant
from maasbase.gateway.fakes import routing_table as table
from maasbase.gateway.testing import StubUpstream, serving

pytestmark = pytest.mark.integration

AUTH = {"authorization": "Bearer sk"}
CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


@dataclass
class Edge:
    http: httpx.AsyncClient
    stub: StubUpstream


@pytest.fixture(params=["native", "asgi"])
async def edge(request: pytest.FixtureRequest) -> AsyncIterator[Edge]:
    stub = StubUpstream()
    await stub.start()
    config = GatewayConfig(
        max_response_bytes=2000,
        max_json_body_bytes=1024,
        max_body_bytes=8192,
        usage_flush_interval=0.02,
    )
    routes = table("1", {"m": [stub.base_url]})
    small = RoutedModel(  # its engines say they take 4 tokens of context
        name="small", upstreams=[Upstream(id="up:small", base_url=stub.base_url)], context_length=4
    )
    app = create_gateway_app(
        routes=FakeRoutingSource(routes.model_copy(update={"models": [*routes.models, small]})),
        keys=FakeKeyResolver({"sk": grant(1)}),
        usage=MemoryUsageSink(),
        config=config,
    )
    try:
        async with (
            serving(app, server=request.param) as url,
            httpx.AsyncClient(base_url=url, headers=AUTH, timeout=10) as http,
        ):
            yield Edge(http, stub)
    finally:
        await stub.aclose()


async def read_stream(http: httpx.AsyncClient, body: dict[str, object]) -> bytes:
    """The bytes of a streamed answer; raises when the body is cut short."""
    received = b""
    async with http.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        async for data in response.aiter_bytes():
            received += data
    return received


async def test_an_upstream_answer_over_the_cap_is_a_502(edge: Edge) -> None:
    edge.stub.completion_tokens = 1000
    response = await edge.http.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["code"] == "upstream_response_too_large"
    assert "max_response_bytes" in error["message"]


async def test_a_stream_over_the_cap_is_cut_visibly(edge: Edge) -> None:
    edge.stub.completion_tokens = 1000
    edge.stub.chunk_delay = 0.005
    with pytest.raises(httpx.RemoteProtocolError, match="incomplete chunked read"):
        await read_stream(edge.http, {**CHAT, "stream": True})


async def test_an_upstream_breaking_mid_stream_cuts_the_client_connection(edge: Edge) -> None:
    edge.stub.break_after = 2
    with pytest.raises(httpx.RemoteProtocolError, match="incomplete chunked read"):
        await read_stream(edge.http, {**CHAT, "stream": True})
    edge.stub.break_after = None
    assert (await edge.http.post("/v1/chat/completions", json=CHAT)).status_code == 200


async def test_request_bodies_are_capped_per_route(edge: Edge) -> None:
    chat = {**CHAT, "messages": [{"role": "user", "content": "x" * 2000}]}
    response = await edge.http.post("/v1/chat/completions", json=chat)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"
    upload = await edge.http.post(  # an upload may be larger than a JSON body
        "/v1/audio/transcriptions", data={"model": "m"}, files={"file": ("a.wav", b"\0" * 4000)}
    )
    assert upload.status_code == 200
    assert upload.json()["text"].startswith("4000 bytes")


async def test_error_messages_quote_client_input_only_so_far(edge: Edge) -> None:
    name = "n" * 900
    response = await edge.http.post("/v1/chat/completions", content=json.dumps({"model": name}))
    assert response.status_code == 404
    message = response.json()["error"]["message"]
    assert "n" * 127 + "\u2026" in message
    assert len(message) < 300
    response = await edge.http.get(f"/v1/models/{name}")
    assert response.status_code == 404
    assert len(response.json()["error"]["message"]) < 300


async def test_a_prompt_that_cannot_fit_the_context_is_refused_before_the_engine(
    edge: Edge,
) -> None:
    def chat(text: str) -> dict[str, object]:
        return {"model": "small", "messages": [{"role": "user", "content": text}]}

    fits = await edge.http.post("/v1/chat/completions", json=chat("x" * 512))
    assert fits.status_code == 200, fits.text  # 4 tokens of 128 characters may hold it
    served = edge.stub.count
    refused = await edge.http.post("/v1/chat/completions", json=chat("x" * 513))
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert error["code"] == "context_length_exceeded"
    assert "more than the 4 tokens of context" in error["message"]
    ids = await edge.http.post("/v1/completions", json={"model": "small", "prompt": [1] * 5})
    assert ids.status_code == 400
    assert edge.stub.count == served  # neither reached the engine
