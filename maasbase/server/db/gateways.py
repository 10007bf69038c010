"""Data functions for gateway identities."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from maasbase.server.db.tables import Gateway


async def get(session: AsyncSession, gateway_id: int) -> Gateway | None:
    return await session.get(Gateway, gateway_id)


async def get_by_name(session: AsyncSession, name: str) -> Gateway | None:
    query = select(Gateway).where(Gateway.name == name)
    return (await session.execute(query)).scalar_one_or_none()


async def get_by_credential_access(session: AsyncSession, access: str) -> Gateway | None:
    query = select(Gateway).where(Gateway.credential_access == access)
    return (await session.execute(query)).scalar_one_or_none()


async def list_page(session: AsyncSession, *, offset: int, limit: int) -> tuple[list[Gateway], int]:
    total = await session.scalar(select(func.count()).select_from(Gateway))
    rows = await session.scalars(select(Gateway).order_by(Gateway.id).offset(offset).limit(limit))
    return list(rows), int(total or 0)


async def create(session: AsyncSession, **fields: Any) -> Gateway:
    gateway = Gateway(**fields)
    session.add(gateway)
    await session.flush()
    return gateway


async def delete(session: AsyncSession, gateway: Gateway) -> None:
    await session.delete(gateway)
    await session.flush()
