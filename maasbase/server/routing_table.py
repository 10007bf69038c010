"""The gateway's routing table, built from running instances and registered providers.

A running instance is reached through its worker's data-plane proxy
(``http://<worker>:<worker port>/proxy/instances/<id>/v1``), with the worker's
data-plane secret as the upstream's API key: engines listen on their worker's loopback
only. The table therefore holds credentials and goes to gateway identities only.
"""

from __future__ import annotations

import hashlib
import logging

from sqlalchemy.ext.asyncio import AsyncSession

from maasbase.backends.registry import BackendRegistry, UnknownBackendError
from maasbase.common.errors import SecretKeyMismatch
from maasbase.common.instances import InstanceState
from maasbase.common.routing import RoutedModel, RouteKind, RoutingTable, Upstream
from maasbase.server.db import instances as instances_db
from maasbase.server.db import models as models_db
from maasbase.server.db import providers as providers_db
from maasbase.server.db import workers as workers_db
from maasbase.server.db.tables import Provider
from maasbase.server.security.secret_box import SecretBox
from maasbase.server.security.worker_secrets import data_plane_secret
from maasbase.server.state import ServerState

logger = logging.getLogger(__name__)


def _host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def _provider_key(provider: Provider, box: SecretBox, reported: set[str]) -> str | None:
    """The provider's API key in plain text; ``None`` (logged once per stored value)
    when it does not decrypt, so one bad key never takes the routing table down."""
    if not provider.api_key:
        return None
    try:
        return box.decrypt(provider.api_key)
    except SecretKeyMismatch as exc:
        if provider.api_key not in reported:
            reported.add(provider.api_key)
            logger.error(
                "provider %r: its API key is not sent upstream: %s (for a provider: delete "
                "it and add it again with its API key)",
                provider.name,
                exc.message,
            )
        return None


def _serves_messages(backends: BackendRegistry | None, name: str) -> bool:
    if backends is None:
        return False
    try:
        return backends.get(name).anthropic_messages
    except UnknownBackendError:
        return False


async def build(
    session: AsyncSession,
    box: SecretBox,
    *,
    worker_key: str,
    reported: set[str] | None = None,
    backends: BackendRegistry | None = None,
) -> RoutingTable:
    """``worker_key`` derives each worker's data-plane secret; ``reported`` collects
    stored keys already logged as undecryptable; ``backends`` tells which engines serve
    Anthropic's Messages API themselves."""
    reported = set() if reported is None else reported
    workers = {w.id: w for w in await workers_db.list_all(session)}
    models = await models_db.list_all(session)
    messages = {m.id: _serves_messages(backends, m.backend) for m in models}
    running: dict[int, list[Upstream]] = {}
    contexts: dict[int, int] = {}  # the smallest context a model's running engines take
    for instance in await instances_db.list_all(session):
        worker = workers.get(instance.worker_id or 0)
        if instance.state != InstanceState.RUNNING.value or worker is None or not instance.port:
            continue
        if instance.context_length:
            known = contexts.get(instance.model_id)
            contexts[instance.model_id] = min(known or instance.context_length,
                                              instance.context_length)  # fmt: skip
        running.setdefault(instance.model_id, []).append(
            Upstream(
                id=f"instance:{instance.id}",
                base_url=f"http://{_host(worker.address)}:{worker.port}"
                f"/proxy/instances/{instance.id}/v1",
                api_key=data_plane_secret(worker_key, worker.id, worker.credential_access),
                anthropic_messages=messages.get(instance.model_id, False),
            )
        )
    routed = [
        RoutedModel(
            name=model.name,
            kind=RouteKind.DEPLOYMENT,
            categories=list(model.categories),
            upstreams=running.get(model.id, []),
            context_length=contexts.get(model.id),
            created=int(model.created_at.timestamp()),
        )
        for model in models
    ]
    deployed = {m.name for m in routed}
    for provider in await providers_db.list_all(session):
        api_key = _provider_key(provider, box, reported)
        for name in provider.models:
            if name in deployed:
                continue  # a deployment of the same name wins
            upstream = Upstream(
                id=f"provider:{provider.name}",
                base_url=provider.base_url.rstrip("/"),
                api_key=api_key,
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
            table = await build(
                session,
                state.secret_box,
                worker_key=state.worker_secret_key,
                reported=state.reported_secrets,
                backends=state.backends,
            )
        remaining = deadline - state.clock.monotonic()
        if table.revision != revision or remaining <= 0 or state.stopping:
            return table
        await state.changes.wait(version, min(remaining, REPOLL_SECONDS))
