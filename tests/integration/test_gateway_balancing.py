"""Balancing, failover, cooldown, affinity, cancellation and routing changes, over real
HTTP: the gateway on a uvicorn port, stub upstreams on their own ports, fake seams."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import httpx
import openai
import pytest

from maasbase.gateway.app import GatewayApp, create_gateway_app
from maasbase.gateway.balancer import Cooldown, Policy
from maasbase.gateway.config import GatewayConfig
from maasbase.gateway.fakes import (
    FakeKeyResolver,
    FakeRoutingSource,
    MemoryUsageSink,
    grant,
    routing_table,
)
from maasbase.gateway.testing import StubUpstream, eventually, listening_socket, serving

pytestmark = pytest.mark.integration

CHAT = [{"role": "user", "content": "hi"}]
AUTH = {"Authorization": "Bearer sk"}


@pytest.fixture
async def stubs() -> AsyncIterator[list[StubUpstream]]:
    started = [StubUpstream(f"s{i}") for i in range(3)]
    for stub in started:
        await stub.start()
    yield started
    for stub in started:
        await stub.aclose()


def dead_url() -> str:
    """A port nothing listens on: connections are refused."""
    sock = listening_socket()
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}/v1"


@asynccontextmanager
async def gateway(
    urls: list[str], **config: object
) -> AsyncIterator[tuple[str, GatewayApp, FakeRoutingSource, MemoryUsageSink]]:
    routes = FakeRoutingSource(routing_table("1", {"m": urls}))
    usage = MemoryUsageSink()
    settings = GatewayConfig(usage_flush_interval=0.02, **config)  # type: ignore[arg-type]
    app = create_gateway_app(
        routes=routes, keys=FakeKeyResolver({"sk": grant()}), usage=usage, config=settings
    )
    async with serving(app) as url:
        yield url, app, routes, usage


def sdk_for(url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="sk", max_retries=0)


async def chat_many(url: str, n: int, *, concurrency: int = 10) -> list[str]:
    """Send ``n`` chat requests with the SDK; the upstream names that answered."""
    async with sdk_for(url) as sdk:
        limit = asyncio.Semaphore(concurrency)

        async def one() -> str:
            async with limit:
                reply = await sdk.chat.completions.with_raw_response.create(
                    model="m",
                    messages=CHAT,  # type: ignore[arg-type]
                )
                return str(reply.http_response.json()["upstream"])

        return await asyncio.gather(*(one() for _ in range(n)))


async def test_round_robin_spreads_evenly(stubs: list[StubUpstream]) -> None:
    async with gateway([s.base_url for s in stubs], policy=Policy.ROUND_ROBIN) as (url, *_):
        await chat_many(url, 30, concurrency=1)
    assert [s.count for s in stubs] == [10, 10, 10]


async def test_least_loaded_upstreams_get_the_requests(stubs: list[StubUpstream]) -> None:
    stubs[0].delay = 0.3  # a slow replica collects requests in flight
    async with gateway([s.base_url for s in stubs]) as (url, *_):
        await chat_many(url, 60, concurrency=12)
    assert stubs[0].count < stubs[1].count
    assert stubs[0].count < stubs[2].count
    assert stubs[1].count + stubs[2].count >= 45


@pytest.mark.parametrize("failure", ["503", "refused", "dropped"])
async def test_failover_hides_a_failing_replica(stubs: list[StubUpstream], failure: str) -> None:
    bad = stubs[2]
    if failure == "503":
        bad.status = 503
    elif failure == "dropped":
        bad.drop = True
    urls = [
        stubs[0].base_url,
        stubs[1].base_url,
        dead_url() if failure == "refused" else bad.base_url,
    ]
    async with gateway(urls, cooldown=Cooldown(base=30)) as (url, app, _, usage):
        answered = await chat_many(url, 40)  # raises on any client-visible error
        assert set(answered) == {"s0", "s1"}
        tried = bad.count
        assert tried <= 10  # at most the first wave of concurrent requests
        await chat_many(url, 20)
        assert bad.count == tried  # out of rotation since
        await eventually(lambda: len(usage.records) == 60)
        assert {r.status for r in usage.records} == {200}
        (cooling,) = [u for u, h in app.balancer.health.items() if h.cooldown_until > 0]
        assert cooling == f"up:{urls[2]}"
        assert app.balancer.health[cooling].failures == 1


async def test_streams_fail_over_before_the_first_byte(stubs: list[StubUpstream]) -> None:
    stubs[0].status = 503
    urls = [stubs[0].base_url, stubs[1].base_url]
    async with gateway(urls, policy=Policy.ROUND_ROBIN) as (url, *_), sdk_for(url) as sdk:
        for _ in range(4):
            stream = await sdk.chat.completions.create(model="m", messages=CHAT, stream=True)  # type: ignore[arg-type]
            assert len([c async for c in stream]) == 7
    assert stubs[1].count == 4


async def test_cooled_down_upstream_comes_back(stubs: list[StubUpstream]) -> None:
    stubs[0].status = 503
    urls = [stubs[0].base_url, stubs[1].base_url]
    cooldown = Cooldown(base=0.3)
    async with gateway(urls, policy=Policy.ROUND_ROBIN, cooldown=cooldown) as (url, *_):
        await chat_many(url, 6, concurrency=1)
        assert stubs[0].count == 1
        stubs[0].status = None  # the replica recovers
        await asyncio.sleep(0.35)
        await chat_many(url, 6, concurrency=1)
    assert stubs[0].count >= 3


async def test_when_every_replica_fails_the_client_gets_a_clear_error(
    stubs: list[StubUpstream],
) -> None:
    stubs[0].status = 503
    async with gateway([stubs[0].base_url, dead_url()]) as (url, *_), sdk_for(url) as sdk:
        with pytest.raises(openai.APIStatusError) as caught:
            await sdk.chat.completions.create(model="m", messages=CHAT)  # type: ignore[arg-type]
    assert caught.value.status_code in (502, 503)
    async with gateway([dead_url()]) as (url, *_), httpx.AsyncClient() as http:
        refused = await http.post(f"{url}/v1/chat/completions", json={"model": "m"}, headers=AUTH)
    assert refused.status_code == 502
    assert "could be reached" in refused.json()["error"]["message"]


async def test_upstream_timeout_is_a_504(stubs: list[StubUpstream]) -> None:
    stubs[0].delay = 1.0
    async with (
        gateway([stubs[0].base_url], read_timeout=0.2) as (url, *_),
        httpx.AsyncClient() as http,
    ):
        response = await http.post(f"{url}/v1/chat/completions", json={"model": "m"}, headers=AUTH)
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "upstream_timeout"


async def test_session_header_keeps_a_conversation_on_one_replica(
    stubs: list[StubUpstream],
) -> None:
    async with gateway([s.base_url for s in stubs]) as (url, *_), httpx.AsyncClient() as http:
        for session in ("a", "b", "c", "d"):
            answered = set()
            for _ in range(5):
                reply = await http.post(
                    f"{url}/v1/chat/completions",
                    json={"model": "m", "messages": CHAT},
                    headers=AUTH | {"x-session-id": session},
                )
                answered.add(reply.json()["upstream"])
            assert len(answered) == 1


async def test_prefix_affinity_sends_equal_prompts_to_one_replica(
    stubs: list[StubUpstream],
) -> None:
    async with (
        gateway([s.base_url for s in stubs], prefix_affinity=True) as (url, *_),
        httpx.AsyncClient() as http,
    ):
        for prompt in ("system prompt A", "system prompt B"):
            messages = [{"role": "system", "content": prompt}, *CHAT]
            answered = {
                (await http.post(f"{url}/v1/chat/completions",
                                 json={"model": "m", "messages": messages},
                                 headers=AUTH)).json()["upstream"]
                for _ in range(5)
            }  # fmt: skip
            assert len(answered) == 1


async def test_client_disconnect_cancels_the_upstream_stream(stubs: list[StubUpstream]) -> None:
    stub = stubs[0]
    stub.endless, stub.chunk_delay = True, 0.01
    async with gateway([stub.base_url]) as (url, app, _, usage), httpx.AsyncClient() as http:
        body = {"model": "m", "messages": CHAT, "stream": True}
        async with http.stream("POST", f"{url}/v1/chat/completions", json=body, headers=AUTH) as r:
            seen = 0
            async for _ in r.aiter_bytes():
                seen += 1
                if seen == 5:
                    break
        await eventually(lambda: stub.abandoned == 1)
        await eventually(lambda: len(usage.records) == 1)
        assert usage.records[0].status == 499
        assert usage.records[0].completion_tokens > 0  # counted from the relayed events
        assert all(h.outstanding == 0 for h in app.balancer.health.values())


async def test_upstream_failing_mid_stream_ends_the_stream_with_an_error(
    stubs: list[StubUpstream],
) -> None:
    stubs[0].break_after = 2
    received: list[object] = []

    async def drain(stream: openai.AsyncStream[object]) -> None:
        async for chunk in stream:
            received.append(chunk)

    async with gateway([stubs[0].base_url]) as (url, *_), sdk_for(url) as sdk:
        stream = await sdk.chat.completions.create(model="m", messages=CHAT, stream=True)  # type: ignore[arg-type]
        with pytest.raises(openai.APIError, match="failed while sending"):
            await drain(stream)  # type: ignore[arg-type]
    assert len(received) == 3


async def test_routing_changes_apply_within_a_second_and_outages_keep_the_table(
    stubs: list[StubUpstream],
) -> None:
    async with gateway([stubs[0].base_url]) as (url, app, routes, _), httpx.AsyncClient() as http:

        async def status(model: str) -> int:
            body = {"model": model, "messages": CHAT}
            return (
                await http.post(f"{url}/v1/chat/completions", json=body, headers=AUTH)
            ).status_code

        assert await status("new") == 404
        routes.set(routing_table("2", {"m": [stubs[0].base_url], "new": [stubs[1].base_url]}))
        await asyncio.wait_for(_until(lambda: status("new"), 200), timeout=1.0)
        routes.fail()  # the control plane goes away
        await asyncio.sleep(0.1)
        assert await status("m") == 200
        assert await status("new") == 200
        assert app.holder.snapshot.revision == "2"


async def _until(probe: Callable[[], Awaitable[int]], wanted: int) -> None:
    for _ in range(1000):
        if await probe() == wanted:
            return
        await asyncio.sleep(0.01)
