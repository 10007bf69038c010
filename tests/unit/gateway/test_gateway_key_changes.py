"""The key cache drops grants named by the credential-change feed: by access key, by
user, all of them on a reset, and never keeps an answer that raced a change."""

from __future__ import annotations

import asyncio

from maasbase.common.clock import FakeClock
from maasbase.common.errors import Unavailable
from maasbase.common.routing import CredentialChange, CredentialChanges, KeyGrant, KeyRefused
from maasbase.gateway.auth import CachedKeyResolver, Caller, access_key_of
from maasbase.gateway.fakes import FakeKeyResolver, grant
from maasbase.gateway.key_changes import apply, follow_key_changes

ALICE_1 = "mb_aaaaaaaaaaaaaaaa_secret1"
ALICE_2 = "mb_bbbbbbbbbbbbbbbb_secret2"
BOB = "mb_cccccccccccccccc_secret3"


def keys() -> FakeKeyResolver:
    return FakeKeyResolver(
        {ALICE_1: grant(1, user_id=10), ALICE_2: grant(2, user_id=10), BOB: grant(3, user_id=20)}
    )


async def warm(cache: CachedKeyResolver) -> None:
    for key in (ALICE_1, ALICE_2, BOB, "mb_aaaaaaaaaaaaaaaa_wrong"):
        await cache.resolve(key)


def test_access_key_is_the_middle_part() -> None:
    assert access_key_of(ALICE_1) == "aaaaaaaaaaaaaaaa"
    assert access_key_of("sk-openai") is None
    assert access_key_of("mb_only") is None


async def test_a_key_change_drops_that_key_only_and_a_user_change_all_their_keys() -> None:
    resolver = keys()
    cache = CachedKeyResolver(resolver, clock=FakeClock())
    await warm(cache)
    assert resolver.checks == 4
    change = CredentialChange(id=1, access_key="aaaaaaaaaaaaaaaa")
    assert apply(CredentialChanges(cursor=1, changes=[change]), cache) == 2  # wrong secret too
    del resolver.keys[ALICE_1]  # revoked
    assert isinstance(await cache.resolve(ALICE_1), KeyRefused)
    await cache.resolve(ALICE_2)
    await cache.resolve(BOB)
    assert resolver.checks == 5

    assert apply(CredentialChanges(cursor=2, changes=[CredentialChange(id=2, user_id=10)]), cache)
    await cache.resolve(ALICE_2)
    await cache.resolve(BOB)
    assert resolver.checks == 6  # only alice's key was asked again

    apply(CredentialChanges(cursor=0, reset=True), cache)
    await warm(cache)
    assert resolver.checks == 10


async def test_an_answer_that_raced_a_change_is_not_cached() -> None:
    release = asyncio.Event()

    class Slow(FakeKeyResolver):
        async def check(self, key: str) -> KeyGrant | KeyRefused | None:
            answer = await super().check(key)
            await release.wait()
            return answer

    resolver = Slow({ALICE_1: grant(1, user_id=10)})
    cache = CachedKeyResolver(resolver, clock=FakeClock())
    lookup = asyncio.ensure_future(cache.resolve(ALICE_1))
    await asyncio.sleep(0)
    cache.invalidate_access_key("aaaaaaaaaaaaaaaa")  # revoked while the check was running
    release.set()
    assert isinstance(await lookup, Caller)
    del resolver.keys[ALICE_1]
    assert isinstance(await cache.resolve(ALICE_1), KeyRefused)


class FakeFeed:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[CredentialChanges | Exception] = asyncio.Queue()
        self.asked: list[int | None] = []

    async def changes(self, after: int | None) -> CredentialChanges:
        self.asked.append(after)
        answer = await self.queue.get()
        if isinstance(answer, Exception):
            raise answer
        return answer


async def test_the_follower_keeps_its_cursor_across_failures() -> None:
    resolver = keys()
    cache = CachedKeyResolver(resolver, clock=FakeClock())
    feed = FakeFeed()

    async def no_sleep(_: float) -> None:
        await asyncio.sleep(0)

    task = asyncio.ensure_future(follow_key_changes(feed, cache, sleep=no_sleep))
    try:
        await feed.queue.put(CredentialChanges(cursor=7))
        for _ in range(50):
            if len(feed.asked) == 2:
                break
            await asyncio.sleep(0)
        await warm(cache)
        await feed.queue.put(Unavailable("the server is down"))
        await feed.queue.put(
            CredentialChanges(cursor=8, changes=[CredentialChange(id=8, user_id=20)])
        )
        for _ in range(50):
            await asyncio.sleep(0)
        assert feed.asked[:3] == [None, 7, 7]
        checks = resolver.checks
        await cache.resolve(BOB)
        await cache.resolve(ALICE_1)
        assert resolver.checks == checks + 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
