"""In-memory fakes of the gateway's control-plane seams, for tests and benchmarks.

``FakeRoutingSource`` (tables set by the test, watchers woken at once, can be made to
fail like a server that is down), ``FakeKeyResolver`` (a dict of keys to grants) and
``MemoryUsageSink`` (keeps every batch). None of them is used in production.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping

from maasbase.common.errors import Unavailable
from maasbase.common.routing import (
    KeyGrant,
    KeyLimits,
    RoutedModel,
    RoutingTable,
    Upstream,
    Usage,
    UsageBatch,
    UsageRecord,
)


def routing_table(revision: str, models: Mapping[str, Iterable[str | Upstream]]) -> RoutingTable:
    """A table from model names to base URLs (or ``Upstream``s); ids are ``up:<url>``."""
    routed = []
    for name, upstreams in models.items():
        ups = [
            u if isinstance(u, Upstream) else Upstream(id=f"up:{u}", base_url=u) for u in upstreams
        ]
        routed.append(RoutedModel(name=name, upstreams=ups))
    return RoutingTable(revision=revision, models=routed)


class FakeRoutingSource:
    def __init__(self, table: RoutingTable | None = None, *, wait: float = 30.0) -> None:
        self.table = table
        self.wait = wait
        self.failing = False
        self.watches = 0
        self._changed = asyncio.Event()

    def set(self, table: RoutingTable) -> None:
        self.table = table
        self._changed.set()
        self._changed = asyncio.Event()

    def fail(self, failing: bool = True) -> None:
        """Make ``watch`` fail (as when the server is down) until called with False."""
        self.failing = failing
        self._changed.set()
        self._changed = asyncio.Event()

    async def watch(self, revision: str | None) -> RoutingTable:
        self.watches += 1
        while True:
            if self.failing:
                raise Unavailable("fake routing source: the server is down")
            table = self.table
            if table is not None and table.revision != revision:
                return table
            changed = self._changed
            try:
                async with asyncio.timeout(self.wait):
                    await changed.wait()
            except TimeoutError:
                if self.table is not None:
                    return self.table


def grant(
    key_id: int = 1,
    *,
    user_id: int = 1,
    username: str = "alice",
    scope: str = "inference",
    allowed_models: list[str] | None = None,
    limits: KeyLimits | None = None,
) -> KeyGrant:
    return KeyGrant(
        api_key_id=key_id,
        user_id=user_id,
        username=username,
        scope=scope,
        allowed_models=allowed_models,
        limits=limits or KeyLimits(),
    )


class FakeKeyResolver:
    def __init__(self, keys: Mapping[str, KeyGrant] | None = None) -> None:
        self.keys = dict(keys or {})
        self.checks = 0
        self.failing = False

    async def check(self, key: str) -> KeyGrant | None:
        self.checks += 1
        if self.failing:
            raise Unavailable("fake key resolver: the server is down")
        return self.keys.get(key)


class MemoryUsageSink:
    def __init__(self) -> None:
        self.batches: list[UsageBatch] = []
        self.failing = False

    @property
    def records(self) -> list[UsageRecord]:
        return [record for batch in self.batches for record in batch.records]

    async def send(self, usages: list[Usage]) -> None:
        if self.failing:
            raise Unavailable("fake usage sink: the server is down")
        self.batches.append(UsageBatch(records=[usage.to_record() for usage in usages]))
