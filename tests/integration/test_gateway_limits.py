"""Per-key limits through the gateway: 429 with Retry-After in the OpenAI shape, in one
process (memory) and shared through a real Redis (``MAAS_TEST_REDIS_URL``)."""

from __future__ import annotations

import os
import random
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager

import openai
import pytest
import redis.asyncio as aioredis

from maasbase.common.routing import KeyLimits
from maasbase.gateway.app import create_gateway_app
from maasbase.gateway.config import GatewayConfig
from maasbase.gateway.fakes import (
    FakeKeyResolver,
    FakeRoutingSource,
    MemoryUsageSink,
    grant,
    routing_table,
)
from maasbase.gateway.limits import LimitStore, UserBucket
from maasbase.gateway.limits_redis import PREFIX, RedisLimitStore
from maasbase.gateway.testing import StubUpstream, serving

pytestmark = pytest.mark.integration

CHAT = [{"role": "user", "content": "hi"}]
TOKENS_PER_REQUEST = 12  # the stub's 7 prompt + 5 completion tokens


@pytest.fixture
def redis_url() -> str:
    url = os.environ.get("MAAS_TEST_REDIS_URL")
    if not url:
        if os.environ.get("MAAS_TEST_REQUIRE_ALL_DATABASES") == "1":
            pytest.fail("MAAS_TEST_REDIS_URL is not set but MAAS_TEST_REQUIRE_ALL_DATABASES=1")
        pytest.skip("MAAS_TEST_REDIS_URL is not set")
    return url


@pytest.fixture
async def stub() -> AsyncIterator[StubUpstream]:
    upstream = StubUpstream()
    await upstream.start()
    yield upstream
    await upstream.aclose()


KEYS = {
    "sk-rpm": KeyLimits(requests_per_minute=3),
    "sk-tpm": KeyLimits(tokens_per_minute=20),
    "sk-quota": KeyLimits(token_quota=TOKENS_PER_REQUEST, quota_period="day"),
}


async def outcomes(url: str, key: str, n: int) -> list[int | str]:
    """HTTP status of ``n`` sequential chat requests (200, or the error code)."""
    results: list[int | str] = []
    refusals: list[openai.RateLimitError] = []
    async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0) as sdk:
        for _ in range(n):
            try:
                await sdk.chat.completions.create(model="m", messages=CHAT)  # type: ignore[arg-type]
            except openai.RateLimitError as exc:
                refusals.append(exc)
                results.append(str(exc.code))
            else:
                results.append(200)
    for refusal in refusals:
        assert refusal.status_code == 429
        assert int(refusal.response.headers["retry-after"]) >= 1
        assert refusal.type == "rate_limit_error"
    return results


def keys_with_fresh_ids() -> FakeKeyResolver:
    base = random.randrange(10**9, 2 * 10**9)  # Redis state of earlier runs stays apart
    return FakeKeyResolver(
        {key: grant(base + i, limits=limits) for i, (key, limits) in enumerate(KEYS.items())}
    )


def limited_gateway(
    stub: StubUpstream, keys: FakeKeyResolver, limits: LimitStore | None
) -> AbstractAsyncContextManager[str]:
    app = create_gateway_app(
        routes=FakeRoutingSource(routing_table("1", {"m": [stub.base_url]})),
        keys=keys,
        usage=MemoryUsageSink(),
        limits=limits,
        config=GatewayConfig(usage_flush_interval=0.05),
    )
    return serving(app)


async def test_limits_in_one_process(stub: StubUpstream) -> None:
    keys = keys_with_fresh_ids()
    async with limited_gateway(stub, keys, None) as url:
        assert await outcomes(url, "sk-rpm", 4) == [200, 200, 200, "rate_limit_exceeded"]
        assert await outcomes(url, "sk-tpm", 3) == [200, 200, "rate_limit_exceeded"]
        assert await outcomes(url, "sk-quota", 2) == [200, "insufficient_quota"]
    assert stub.count == 3 + 2 + 1  # refused requests never reached the engine


async def test_limits_shared_by_two_gateways_through_redis(
    stub: StubUpstream, redis_url: str
) -> None:
    keys = keys_with_fresh_ids()
    first, second = RedisLimitStore.from_url(redis_url), RedisLimitStore.from_url(redis_url)
    try:
        async with (
            limited_gateway(stub, keys, first) as url_a,
            limited_gateway(stub, keys, second) as url_b,
        ):
            rpm = [
                *(await outcomes(url_a, "sk-rpm", 2)),
                *(await outcomes(url_b, "sk-rpm", 2)),
                *(await outcomes(url_a, "sk-rpm", 1)),
            ]
            assert rpm == [200, 200, 200, "rate_limit_exceeded", "rate_limit_exceeded"]
            tpm = [*(await outcomes(url_a, "sk-tpm", 1)), *(await outcomes(url_b, "sk-tpm", 2))]
            assert tpm == [200, 200, "rate_limit_exceeded"]
            quota = [
                *(await outcomes(url_b, "sk-quota", 1)),
                *(await outcomes(url_a, "sk-quota", 1)),
            ]
            assert quota == [200, "insufficient_quota"]
    finally:
        client = aioredis.Redis.from_url(redis_url)
        for grant_ in keys.keys.values():
            async for name in client.scan_iter(f"{PREFIX}:{{{grant_.api_key_id}}}:*"):
                await client.delete(name)
        await client.aclose()
        await first.aclose()
        await second.aclose()


async def test_redis_window_is_exact_and_says_when(redis_url: str) -> None:
    store = RedisLimitStore.from_url(redis_url)
    key_id = random.randrange(10**9, 2 * 10**9)
    limits = KeyLimits(requests_per_minute=2, tokens_per_minute=100)
    try:
        assert (await store.admit(key_id, limits, 1000.0)).allowed
        assert (await store.admit(key_id, limits, 1010.0)).allowed
        refused = await store.admit(key_id, limits, 1020.0)
        assert (refused.allowed, refused.reason) == (False, "requests")
        assert refused.retry_after == pytest.approx(40.0)
        assert (await store.admit(key_id, limits, 1060.5)).allowed  # the first left the window
        await store.consume(key_id, limits, 150, 1061.0)
        tokens = await store.admit(key_id, limits, 1062.0)
        assert (tokens.allowed, tokens.reason) == (False, "tokens")
        assert tokens.retry_after == pytest.approx(60.0, abs=1.0)
        assert (await store.admit(key_id, limits, 1123.0)).allowed
    finally:
        client = aioredis.Redis.from_url(redis_url)
        async for name in client.scan_iter(f"{PREFIX}:{{{key_id}}}:*"):
            await client.delete(name)
        await client.aclose()
        await store.aclose()


async def test_redis_user_limits_are_shared_by_a_users_keys_across_gateways(
    redis_url: str,
) -> None:
    first, second = RedisLimitStore.from_url(redis_url), RedisLimitStore.from_url(redis_url)
    user_id = random.randrange(10**9, 2 * 10**9)
    key_a, key_b = user_id, user_id + 1  # user and key buckets never mix, even with equal ids
    user = UserBucket(user_id, KeyLimits(requests_per_minute=3, token_quota=30))
    own = KeyLimits(requests_per_minute=10)
    t = 1_800_000_000.0  # quota counters expire at their period's end: a real date
    try:
        decisions = [
            await (first, second)[i % 2].admit((key_a, key_b)[i % 2], own, t + i, user)
            for i in range(4)
        ]
        assert [d.allowed for d in decisions] == [True, True, True, False]
        assert (decisions[3].reason, decisions[3].level) == ("requests", "user")
        assert (await first.admit(key_a, own, t)).allowed  # the key alone has room
        key_only = await first.admit(key_a, KeyLimits(requests_per_minute=1), t + 100, user)
        assert (key_only.allowed, key_only.level) == (True, "key")
        refused = await first.admit(key_a, KeyLimits(requests_per_minute=1), t + 101, user)
        assert (refused.allowed, refused.level) == (False, "key")
        await first.consume(key_a, own, 20, t + 102, user)
        await second.consume(key_b, own, 10, t + 103, user)
        quota = await second.admit(key_b, own, t + 200, user)
        assert (quota.allowed, quota.reason, quota.level) == (False, "quota", "user")
    finally:
        client = aioredis.Redis.from_url(redis_url)
        for pattern in (f"{PREFIX}:{{u{user_id}}}:*", f"{PREFIX}:{{{key_a}}}:*"):
            async for name in client.scan_iter(pattern):
                await client.delete(name)
        await client.aclose()
        await first.aclose()
        await second.aclose()


async def test_an_unreachable_redis_pauses_limits_but_not_serving(stub: StubUpstream) -> None:
    store = RedisLimitStore.from_url("redis://127.0.0.1:1/0")
    async with limited_gateway(stub, keys_with_fresh_ids(), store) as url:
        assert await outcomes(url, "sk-rpm", 4) == [200, 200, 200, 200]
