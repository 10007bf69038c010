"""The gateway's seams, implemented inside the control plane process (``maas-base start``
serves ``/v1`` on the same port): routes, key checks, credential changes and usage go
straight to the database instead of over HTTP."""

from __future__ import annotations

import logging

from maasbase.common.errors import Unauthenticated
from maasbase.common.routing import (
    CredentialChanges,
    KeyGrant,
    KeyRefused,
    RoutingTable,
    Usage,
)
from maasbase.server import key_changes, routing_table
from maasbase.server.api.gateway_sync import grant_for_key
from maasbase.server.db import usage as usage_db
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
    def __init__(self, state: ServerState) -> None:
        self.state = state

    async def send(self, usages: list[Usage]) -> None:
        async with self.state.sessions() as session:
            await usage_db.insert_rows(session, [usage.row() for usage in usages])
            await session.commit()
