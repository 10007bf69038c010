"""The routing table a gateway serves from, and how it follows the control plane.

``RouteHolder`` keeps an immutable ``RouteSnapshot``; a new table replaces it in one
assignment, so a request sees either the old table or the new one, never a mix.
``follow_routes`` long-polls a ``RoutingSource`` and keeps the last table whenever the
source fails, so the gateway goes on serving while the server is down.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol

from pydantic import ValidationError

from maasbase.common.errors import MaasError, Unavailable
from maasbase.common.routing import RoutedModel, RoutingTable
from maasbase.gateway.control import ControlPlaneClient

logger = logging.getLogger("maasbase.gateway.routing")

ROUTES_PATH = "/api/v1/gateway/routes"
DEFAULT_WAIT = 20.0


class RoutingSource(Protocol):
    async def watch(self, revision: str | None) -> RoutingTable:
        """The current table, as soon as its revision differs from ``revision``
        (at once when ``revision`` is None); after the source's own wait time it may
        return the unchanged table. Raises ``MaasError`` when the source fails."""
        ...


@dataclass(frozen=True)
class RouteSnapshot:
    revision: str | None
    models: Mapping[str, RoutedModel] = field(default_factory=dict)
    upstream_ids: frozenset[str] = frozenset()

    @classmethod
    def from_table(cls, table: RoutingTable) -> RouteSnapshot:
        models = {model.name: model for model in table.models}
        ids = frozenset(u.id for model in table.models for u in model.upstreams)
        return cls(table.revision, MappingProxyType(models), ids)


EMPTY = RouteSnapshot(revision=None)


class RouteHolder:
    """The current snapshot; ``loaded`` is set once the first table arrived."""

    def __init__(self) -> None:
        self.snapshot = EMPTY
        self.loaded = asyncio.Event()
        self._listeners: list[Callable[[RouteSnapshot], None]] = []

    def on_change(self, listener: Callable[[RouteSnapshot], None]) -> None:
        self._listeners.append(listener)

    def replace(self, table: RoutingTable) -> RouteSnapshot:
        snapshot = RouteSnapshot.from_table(table)
        self.snapshot = snapshot
        self.loaded.set()
        for listener in self._listeners:
            listener(snapshot)
        return snapshot


def retry_delay(failures: int, *, base: float = 0.25, maximum: float = 5.0) -> float:
    """Backoff before the next watch after ``failures`` failures in a row."""
    return min(maximum, base * (1 << max(0, min(failures, 30) - 1)))


async def follow_routes(
    source: RoutingSource,
    holder: RouteHolder,
    *,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """Apply every new table from ``source`` to ``holder`` until cancelled."""
    failures = 0
    while True:
        table: RoutingTable | None = None
        try:
            table = await source.watch(holder.snapshot.revision)
        except MaasError as exc:
            failures += 1
            delay = retry_delay(failures)
            log = logger.warning if failures == 1 or failures % 20 == 0 else logger.debug
            log("routing source failed (%s); serving revision %s, retrying in %.2f s",
                exc.message, holder.snapshot.revision, delay)  # fmt: skip
        if table is None:
            await sleep(delay)
            continue
        failures = 0
        if table.revision != holder.snapshot.revision:
            holder.replace(table)
            logger.info("routing table revision %s: %d models", table.revision, len(table.models))


class HttpRoutingSource:
    """``GET {server}/api/v1/gateway/routes?revision=R&wait=S`` with the gateway's token.

    The server answers 200 with a ``RoutingTable`` once its revision differs from ``R``
    (or at once when ``revision`` is omitted), or after ``wait`` seconds with the
    unchanged table; 304 (no body) is also accepted as "unchanged".
    """

    def __init__(
        self,
        server_url: str,
        token: str,
        *,
        client: ControlPlaneClient | None = None,
        wait: float = DEFAULT_WAIT,
    ) -> None:
        self.client = client or ControlPlaneClient(server_url, token)
        self.wait = wait
        self._last: RoutingTable | None = None

    async def watch(self, revision: str | None) -> RoutingTable:
        params = {"wait": f"{self.wait:g}"}
        if revision is not None:
            params["revision"] = revision
        status, body = await self.client.request(
            "GET", ROUTES_PATH, params=params, time_limit=self.wait + 10
        )
        if status == 304 and self._last is not None:
            return self._last
        if status != 200:
            raise Unavailable(f"GET {ROUTES_PATH} answered HTTP {status}: {body[:200]!r}")
        try:
            table = RoutingTable.model_validate_json(body)
        except ValidationError as exc:
            raise Unavailable(
                f"GET {ROUTES_PATH} returned an invalid routing table: {exc}"
            ) from exc
        self._last = table
        return table

    async def aclose(self) -> None:
        await self.client.aclose()
