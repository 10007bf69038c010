"""The gateway's seams, implemented inside the control plane process (``maas-base start``
serves ``/v1`` on the same port): routes, key checks, credential changes and usage go
straight to the database instead of over HTTP."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from maasbase.common.errors import Unauthenticated
from maasbase.common.routing import (
    CredentialChanges,
    KeyGrant,
    KeyRefused,
    RoutingTable,
    Usage,
)
from maasbase.server import key_changes, routing_table, usage_ingest
from maasbase.server.api.gateway_sync import grant_for_key
from maasbase.server.state import ServerState

logger = logging.getLogger(__name__)

WATCH_SECONDS = 25.0


class LocalRoutes:
    def __init__(self, state: ServerState) -> None:
        self.state = state

    async def watch(self, revision: str | None) -> RoutingTable:
        return await routing_table.watch(self.state, revision, WATCH_SECONDS)


class LocalKeys:
    def __init__(self, state: ServerState) -> None:
        self.state = state

    async def check(self, key: str) -> KeyGrant | KeyRefused:
        async with self.state.sessions() as session:
            try:
                return await grant_for_key(session, self.state, key)
            except Unauthenticated as exc:
                return KeyRefused(exc.message)


class LocalKeyChanges:
    def __init__(self, state: ServerState) -> None:
        self.state = state

    async def changes(self, after: int | None) -> CredentialChanges:
        return await key_changes.watch(self.state, after, WATCH_SECONDS)


class LocalUsage:
    """Usage straight into the database, checked record by record as the HTTP route does:
    a record the server refuses is logged and dropped, never retried; a database that is
    down keeps the batch in the gateway's buffer for the next round."""

    def __init__(self, state: ServerState) -> None:
        self.state = state

    async def send(self, usages: list[Usage]) -> None:
        now = datetime.fromtimestamp(self.state.clock.now(), UTC)
        async with self.state.sessions() as session:
            answer = await usage_ingest.store(session, [usage.row() for usage in usages], now=now)
        for item in answer.rejected[:5]:
            usage = usages[item.index]
            logger.error("usage record dropped (key %s, model %r): %s",
                         usage.api_key_id, usage.model, item.reason)  # fmt: skip
        if len(answer.rejected) > 5:
            logger.error("%d more usage records dropped", len(answer.rejected) - 5)
