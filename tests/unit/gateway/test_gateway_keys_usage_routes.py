"""Key cache, usage buffer and route following, with fake seams and a fake clock."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from maasbase.common.clock import FakeClock
from maasbase.common.routing import UNKNOWN_KEY, KeyGrant, KeyRefused, RoutingTable, Usage
from maasbase.gateway.auth import CachedKeyResolver, Caller
from maasbase.gateway.errors import InvalidApiKey, ModelNotAllowed, ScopeNotAllowed
from maasbase.gateway.fakes import (
    FakeKeyResolver,
    FakeRoutingSource,
    MemoryUsageSink,
    grant,
    routing_table,
)
from maasbase.gateway.metering import UsageMeter
from maasbase.gateway.routing import RouteHolder, follow_routes, retry_delay


async def test_grants_are_cached_for_their_ttl() -> None:
    clock = FakeClock()
    keys = FakeKeyResolver({"good": grant()})
    cache = CachedKeyResolver(keys, clock=clock, ttl=30, negative_ttl=5)
    assert isinstance(await cache.resolve("good"), Caller)
    assert await cache.resolve("bad") == KeyRefused(UNKNOWN_KEY)
    await cache.resolve("good")
    await cache.resolve("bad")
    assert keys.checks == 2
    clock.advance(6)  # the unknown key is asked again, the grant is not
    await cache.resolve("good")
    await cache.resolve("bad")
    assert keys.checks == 3
    clock.advance(30)
    await cache.resolve("good")
    assert keys.checks == 4


async def test_concurrent_first_uses_share_one_lookup() -> None:
    release = asyncio.Event()

    class Slow(FakeKeyResolver):
        async def check(self, key: str) -> KeyGrant | None:
            await release.wait()
            return await super().check(key)

    keys = Slow({"k": grant()})
    cache = CachedKeyResolver(keys, clock=FakeClock())
    waiting = [asyncio.ensure_future(cache.resolve("k")) for _ in range(10)]
    await asyncio.sleep(0)
    release.set()
    results = await asyncio.gather(*waiting)
    assert keys.checks == 1
    assert all(isinstance(r, Caller) and r.grant.api_key_id == 1 for r in results)


async def test_known_grants_are_served_while_the_server_is_down() -> None:
    clock = FakeClock()
    keys = FakeKeyResolver({"k": grant()})
    cache = CachedKeyResolver(keys, clock=clock, ttl=1)
    await cache.resolve("k")
    keys.failing = True
    clock.advance(5)
    assert isinstance(await cache.resolve("k"), Caller)
    with pytest.raises(Exception, match="server is down"):
        await cache.resolve("never-seen")


def test_caller_checks() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
    expired = Caller.from_grant(
        grant().model_copy(update={"expires_at": datetime(2025, 1, 1, tzinfo=UTC)})
    )
    with pytest.raises(InvalidApiKey, match="expired at 2025-01-01T00:00:00"):
        expired.check_usable(now)
    with pytest.raises(ScopeNotAllowed, match="scope 'management'"):
        Caller.from_grant(grant(scope="management")).check_usable(now)
    Caller.from_grant(grant(scope="all")).check_usable(now)
    limited = Caller.from_grant(grant(allowed_models=["a"]))
    limited.check_model("a")
    with pytest.raises(ModelNotAllowed):
        limited.check_model("b")
    assert not limited.limited
    nothing = Caller.from_grant(grant(allowed_models=[]))  # an empty list allows no model
    with pytest.raises(ModelNotAllowed):
        nothing.check_model("a")
    assert not Caller.from_grant(grant(allowed_models=["  "])).may_use("  ")


def usage(i: int) -> Usage:
    return Usage(1_700_000_000.0 + i, 1, 2, "m", "chat.completions", "u", 200, 3, 4, 1.5)


async def test_usage_is_sent_in_batches_and_kept_when_sending_fails() -> None:
    sink = MemoryUsageSink()
    meter = UsageMeter(sink, batch_size=3)
    for i in range(7):
        meter.record(usage(i))
    sink.failing = True
    assert not await meter.flush()
    assert meter.pending == 7
    sink.failing = False
    assert await meter.flush()
    assert [len(b.records) for b in sink.batches] == [3, 3, 1]
    records = sink.records
    assert [r.time.timestamp() for r in records] == [1_700_000_000.0 + i for i in range(7)]
    assert records[0].prompt_tokens == 3
    assert records[0].completion_tokens == 4


async def test_usage_buffer_is_bounded() -> None:
    meter = UsageMeter(MemoryUsageSink(), max_buffer=5)
    for i in range(8):
        meter.record(usage(i))
    assert meter.pending == 5
    assert meter.dropped == 3


async def test_routes_follow_the_source_and_survive_its_failures() -> None:
    sleeps: list[float] = []

    async def fast_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        await asyncio.sleep(0)

    source = FakeRoutingSource(routing_table("1", {"a": ["http://x/v1"]}))
    holder = RouteHolder()
    changes: list[str | None] = []
    holder.on_change(lambda snapshot: changes.append(snapshot.revision))
    task = asyncio.ensure_future(follow_routes(source, holder, sleep=fast_sleep))
    try:
        await asyncio.wait_for(holder.loaded.wait(), 1)
        source.fail()
        for _ in range(5):
            await asyncio.sleep(0)
        assert holder.snapshot.revision == "1"  # the last table stays
        assert sleeps
        source.fail(False)
        source.set(RoutingTable(revision="2", models=[]))
        for _ in range(20):
            await asyncio.sleep(0)
        assert holder.snapshot.revision == "2"
        assert changes == ["1", "2"]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_retry_delay_backs_off_to_a_ceiling() -> None:
    assert [retry_delay(n) for n in (1, 2, 3, 10, 100)] == [0.25, 0.5, 1.0, 5.0, 5.0]
