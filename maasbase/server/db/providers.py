"""Data functions for external providers."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
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
