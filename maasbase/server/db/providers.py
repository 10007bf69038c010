"""Data functions for external providers."""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from maasbase.server.db.tables import Provider


async def list_all(session: AsyncSession) -> list[Provider]:
    return list(await session.scalars(select(Provider).order_by(Provider.name)))


async def get(session: AsyncSession, provider_id: int) -> Provider | None:
    return await session.get(Provider, provider_id)


async def get_by_name(session: AsyncSession, name: str) -> Provider | None:
    query = select(Provider).where(Provider.name == name)
    return (await session.execute(query)).scalar_one_or_none()


async def create(session: AsyncSession, **fields: Any) -> Provider:
    provider = Provider(**fields)
    session.add(provider)
    await session.flush()
    return provider


async def delete(session: AsyncSession, provider: Provider) -> None:
    await session.delete(provider)
    await session.flush()


async def stored_api_keys(session: AsyncSession) -> list[tuple[int, str]]:
    """``(id, api_key)`` of every provider with a key, as stored (encrypted or not)."""
    query = select(Provider.id, Provider.api_key).where(Provider.api_key.is_not(None))
    return [(row.id, row.api_key) for row in await session.execute(query) if row.api_key]


async def replace_api_key(session: AsyncSession, provider_id: int, old: str, new: str) -> int:
    """Set the stored key to ``new`` if it still is ``old`` (another server replica may
    have replaced it first); the number of rows changed, 0 or 1."""
    query = (
        update(Provider)
        .where(Provider.id == provider_id, Provider.api_key == old)
        .values(api_key=new)
        .execution_options(synchronize_session=False)
    )
    result = cast(CursorResult[Any], await session.execute(query))
    return result.rowcount
