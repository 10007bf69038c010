"""Usage records: inserts of checked records from gateways, aggregates for the usage API."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, case, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from maasbase.common.routing import UsageRecord as UsageIn
from maasbase.server.db.tables import ApiKey, UsageRecord


def _group_column(name: str) -> ColumnElement[Any]:
    if name == "day":
        return func.date(UsageRecord.time).label(name)
    column = {
        "model": UsageRecord.model,
        "user": UsageRecord.user_id,
        "key": UsageRecord.api_key_id,
    }[name]
    return column.label(name)


GROUPS = ("day", "model", "user", "key")


async def key_owners(session: AsyncSession, api_key_ids: Iterable[int]) -> dict[int, int]:
    """The owner (user id) of each of these API keys that exists, revoked or not."""
    ids = sorted(set(api_key_ids))
    if not ids:
        return {}
    rows = await session.execute(select(ApiKey.id, ApiKey.user_id).where(ApiKey.id.in_(ids)))
    return {key_id: user_id for key_id, user_id in rows}


async def insert_records(
    session: AsyncSession, records: Sequence[UsageIn], *, gateway_id: int | None = None
) -> int:
    """Store records already checked (``server.usage_ingest``), tagged with the gateway
    that sent them (None: the control plane's own gateway, or not known)."""
    if not records:
        return 0
    rows = [record.model_dump() | {"gateway_id": gateway_id} for record in records]
    await session.execute(insert(UsageRecord), rows)
    return len(rows)


async def aggregate(
    session: AsyncSession,
    *,
    group_by: list[str],
    start: datetime | None,
    end: datetime | None,
    user_id: int | None,
) -> list[dict[str, Any]]:
    columns = [_group_column(g) for g in group_by]
    query = select(
        *columns,
        func.count().label("requests"),
        func.coalesce(func.sum(UsageRecord.prompt_tokens), 0).label("prompt_tokens"),
        func.coalesce(func.sum(UsageRecord.completion_tokens), 0).label("completion_tokens"),
        func.avg(UsageRecord.latency_ms).label("avg_latency_ms"),
        func.avg(UsageRecord.ttft_ms).label("avg_ttft_ms"),
        func.count(case((UsageRecord.status >= 400, 1))).label("errors"),
    )
    if start is not None:
        query = query.where(UsageRecord.time >= start)
    if end is not None:
        query = query.where(UsageRecord.time < end)
    if user_id is not None:
        query = query.where(UsageRecord.user_id == user_id)
    if columns:
        query = query.group_by(*columns).order_by(*columns)
    rows = (await session.execute(query)).mappings().all()
    return [dict(row) for row in rows]


async def tokens_used(session: AsyncSession, api_key_id: int, *, since: datetime) -> int:
    """Prompt + completion tokens a key used since ``since`` (for quotas)."""
    total = await session.scalar(
        select(
            func.coalesce(func.sum(UsageRecord.prompt_tokens + UsageRecord.completion_tokens), 0)
        ).where(UsageRecord.api_key_id == api_key_id, UsageRecord.time >= since)
    )
    return int(total or 0)


async def user_tokens_used(session: AsyncSession, user_id: int, *, since: datetime) -> int:
    """Prompt + completion tokens all of a user's keys used since ``since``."""
    total = await session.scalar(
        select(
            func.coalesce(func.sum(UsageRecord.prompt_tokens + UsageRecord.completion_tokens), 0)
        ).where(UsageRecord.user_id == user_id, UsageRecord.time >= since)
    )
    return int(total or 0)
