"""Data functions for API keys."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from maasbase.server.db.tables import ApiKey


async def get(session: AsyncSession, key_id: int) -> ApiKey | None:
    return await session.get(ApiKey, key_id)


async def get_by_access_key(session: AsyncSession, access_key: str) -> ApiKey | None:
    result = await session.execute(select(ApiKey).where(ApiKey.access_key == access_key))
    return result.scalar_one_or_none()


async def list_page(
    session: AsyncSession,
    *,
    user_id: int | None,
    offset: int,
    limit: int,
    include_revoked: bool = False,
) -> tuple[list[ApiKey], int]:
    query = select(ApiKey)
    if user_id is not None:
        query = query.where(ApiKey.user_id == user_id)
    if not include_revoked:
        query = query.where(ApiKey.revoked_at.is_(None))
    total = await session.scalar(select(func.count()).select_from(query.subquery()))
    rows = await session.scalars(query.order_by(ApiKey.id).offset(offset).limit(limit))
    return list(rows), int(total or 0)


async def name_taken(session: AsyncSession, user_id: int, name: str) -> bool:
    found = await session.scalar(
        select(ApiKey.id).where(ApiKey.user_id == user_id, ApiKey.active_name == name)
    )
    return found is not None


async def create(
    session: AsyncSession,
    *,
    user_id: int,
    name: str,
    access_key: str,
    secret_hash: str,
    scope: str,
    allowed_models: list[Any] | None,
    expires_at: datetime | None,
    **limits: Any,
) -> ApiKey:
    key = ApiKey(
        **limits,
        user_id=user_id,
        name=name,
        active_name=name,
        access_key=access_key,
        secret_hash=secret_hash,
        scope=scope,
        allowed_models=allowed_models,
        expires_at=expires_at,
    )
    session.add(key)
    await session.flush()
    return key


def revoke(key: ApiKey, now: datetime) -> None:
    if key.revoked_at is None:
        key.revoked_at = now
        key.active_name = None
