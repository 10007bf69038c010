"""Data functions for user-defined backends, and the registry built from them."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from maasbase.backends.registry import BackendRegistry
from maasbase.server.db.tables import BackendRow


async def list_all(session: AsyncSession) -> list[BackendRow]:
    return list(await session.scalars(select(BackendRow).order_by(BackendRow.name)))


async def get_by_name(session: AsyncSession, name: str) -> BackendRow | None:
    query = select(BackendRow).where(BackendRow.name == name)
    return (await session.execute(query)).scalar_one_or_none()


async def create(session: AsyncSession, name: str, definition: dict[str, Any]) -> BackendRow:
    row = BackendRow(name=name, definition=definition)
    session.add(row)
    await session.flush()
    return row


async def delete(session: AsyncSession, row: BackendRow) -> None:
    await session.delete(row)
    await session.flush()


async def registry(session: AsyncSession) -> BackendRegistry:
    """Built-in backends plus the user-defined ones stored in the database."""
    return BackendRegistry.default(user=[row.definition for row in await list_all(session)])
