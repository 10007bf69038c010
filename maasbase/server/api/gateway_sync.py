"""What gateways need from the control plane: the routing table (long-poll), API key
checks, the credential-change feed (long-poll), and a place to send usage batches.
Authenticated with the cluster token."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession

from maasbase.common.bounds import DbInt
from maasbase.common.routing import (
    CredentialChanges,
    KeyCheck,
    KeyGrant,
    KeyLimits,
    RoutingTable,
    UsageIngest,
    quota_period,
)
from maasbase.server import authn, key_changes, routing_table, usage_ingest
from maasbase.server.api.deps import GatewayCaller, Session, State
from maasbase.server.db import api_keys as api_keys_db
from maasbase.server.db import usage as usage_db
from maasbase.server.db import users as users_db
from maasbase.server.db.tables import ApiKey, User
from maasbase.server.state import ServerState

router = APIRouter(prefix="/api/v1/gateway", tags=["gateway"])


@router.get("/routes", response_model=RoutingTable)
async def watch_routes(
    _gateway: GatewayCaller,
    state: State,
    revision: str | None = Query(default=None),
    wait: float = Query(default=0, ge=0, le=60),
) -> RoutingTable:
    """The routing table, at once when it differs from ``revision``, else when it changes
    or after ``wait`` seconds."""
    return await routing_table.watch(state, revision, wait)


async def grant_for_key(session: AsyncSession, state: ServerState, presented: str) -> KeyGrant:
    """Who an API key belongs to and what it may do; raises ``Unauthenticated`` with the
    reason otherwise."""
    now = datetime.fromtimestamp(state.clock.now(), UTC)
    principal = await authn.from_api_key(session, presented, now=now)
    assert principal.api_key_id is not None
    assert principal.user_id is not None
    key = await api_keys_db.get(session, principal.api_key_id)
    user = await users_db.get(session, principal.user_id)
    assert key is not None
    assert user is not None
    key_start, _ = quota_period(key.quota_period, now.timestamp())
    user_start, _ = quota_period(user.quota_period, now.timestamp())
    key_used = user_used = 0
    if key.token_quota is not None:
        since = datetime.fromtimestamp(key_start, UTC)
        key_used = await usage_db.tokens_used(session, key.id, since=since)
    if user.token_quota is not None:
        since = datetime.fromtimestamp(user_start, UTC)
        user_used = await usage_db.user_tokens_used(session, user.id, since=since)
    return KeyGrant(
        api_key_id=key.id,
        user_id=principal.user_id,
        username=principal.name,
        scope=key.scope,
        # An empty list is kept: it allows no model (never "every model").
        allowed_models=None if key.allowed_models is None else list(key.allowed_models),
        expires_at=key.expires_at,
        limits=_limits(key, key_used, key_start),
        user_limits=_limits(user, user_used, user_start),
    )


def _limits(row: ApiKey | User, used: int, period_start: float) -> KeyLimits:
    """The limits set on a key or a user, with the quota used in the current period."""
    return KeyLimits(
        requests_per_minute=row.rpm_limit,
        tokens_per_minute=row.tpm_limit,
        token_quota=row.token_quota,
        quota_period=row.quota_period,
        quota_used=used,
        quota_period_start=period_start,
    )


@router.post("/keys/check", response_model=KeyGrant)
async def check_key(
    body: KeyCheck, _gateway: GatewayCaller, state: State, session: Session
) -> KeyGrant:
    """Who an API key belongs to and what it may do; 401 with the reason otherwise."""
    return await grant_for_key(session, state, body.key)


@router.get("/key-changes", response_model=CredentialChanges)
async def watch_key_changes(
    _gateway: GatewayCaller,
    state: State,
    after: DbInt | None = Query(default=None),
    wait: float = Query(default=0, ge=0, le=60),
) -> CredentialChanges:
    """Keys and users whose cached grants gateways must drop: the changes after
    ``after``, at once when there are any, else when one is written or after ``wait``
    seconds. Without ``after``, the newest change id to start from."""
    return await key_changes.watch(state, after, wait)


class RawUsageBatch(BaseModel):
    """A usage batch as sent: its records are checked one by one (``usage_ingest``)."""

    records: list[Any] = Field(max_length=usage_ingest.MAX_BATCH)


@router.post("/usage", status_code=202, response_model=UsageIngest)
async def ingest_usage(
    body: RawUsageBatch, _gateway: GatewayCaller, state: State, session: Session
) -> UsageIngest:
    """Store a batch of usage records: the valid ones are stored, each other one is
    listed with the reason it was rejected (the gateway drops those)."""
    now = datetime.fromtimestamp(state.clock.now(), UTC)
    return await usage_ingest.store(session, body.records, now=now, gateway_id=_gateway.gateway_id)
