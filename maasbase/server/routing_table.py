"""The gateway's routing table, built from running instances and registered providers."""

from __future__ import annotations

import hashlib

from sqlalchemy.ext.asyncio import AsyncSession

from maasbase.common.instances import InstanceState
from maasbase.common.routing import RoutedModel, RouteKind, RoutingTable, Upstream
from maasbase.server.db import instances as instances_db
from maasbase.server.db import models as models_db
from maasbase.server.db import providers as providers_db
from maasbase.server.db import workers as workers_db
from maasbase.server.state import ServerState


def _host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


async def build(session: AsyncSession) -> RoutingTable:
    workers = {w.id: w for w in await workers_db.list_all(session)}
    running: dict[int, list[Upstream]] = {}
    for instance in await instances_db.list_all(session):
        worker = workers.get(instance.worker_id or 0)
        if instance.state != InstanceState.RUNNING.value or worker is None or not instance.port:
            continue
        running.setdefault(instance.model_id, []).append(
            Upstream(
                id=f"instance:{instance.id}",
                base_url=f"http://{_host(worker.address)}:{instance.port}/v1",
            )
        )
    routed = [
        RoutedModel(
            name=model.name,
            kind=RouteKind.DEPLOYMENT,
            categories=list(model.categories),
            upstreams=running.get(model.id, []),
            created=int(model.created_at.timestamp()),
        )
        for model in await models_db.list_all(session)
    ]
    deployed = {m.name for m in routed}
    for provider in await providers_db.list_all(session):
        for name in provider.models:
            if name in deployed:
                continue  # a deployment of the same name wins
            upstream = Upstream(
                id=f"provider:{provider.name}",
                base_url=provider.base_url.rstrip("/"),
                api_key=provider.api_key,
            )
            routed.append(
                RoutedModel(
                    name=name,
                    kind=RouteKind.PROVIDER,
                    upstreams=[upstream],
                    owned_by=provider.name,
                    created=int(provider.created_at.timestamp()),
                )
            )
    routed.sort(key=lambda m: m.name)
    canonical = "".join(m.model_dump_json() for m in routed)
    return RoutingTable(revision=hashlib.sha256(canonical.encode()).hexdigest()[:16], models=routed)


REPOLL_SECONDS = 2.0


async def watch(state: ServerState, revision: str | None, wait: float) -> RoutingTable:
    """At once when the table differs from ``revision``; else when it changes, or after
    ``wait`` seconds (the database is re-read every few seconds, for other replicas)."""
    deadline = state.clock.monotonic() + wait
    while True:
        version = state.changes.version
        async with state.sessions() as session:
            table = await build(session)
        remaining = deadline - state.clock.monotonic()
        if table.revision != revision or remaining <= 0 or state.stopping:
            return table
        await state.changes.wait(version, min(remaining, REPOLL_SECONDS))
