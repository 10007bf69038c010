"""Data functions for models."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from maasbase.server.db.tables import Model


async def get(session: AsyncSession, model_id: int) -> Model | None:
    return await session.get(Model, model_id)


async def get_by_name(session: AsyncSession, name: str) -> Model | None:
    return (await session.execute(select(Model).where(Model.name == name))).scalar_one_or_none()


async def list_page(
    session: AsyncSession, *, offset: int, limit: int, search: str | None = None
) -> tuple[list[Model], int]:
    query = select(Model)
    if search:
        query = query.where(Model.name.contains(search, autoescape=True))
    total = await session.scalar(select(func.count()).select_from(query.subquery()))
    rows = await session.scalars(query.order_by(Model.id).offset(offset).limit(limit))
    return list(rows), int(total or 0)


async def list_all(session: AsyncSession) -> list[Model]:
    return list(await session.scalars(select(Model).order_by(Model.id)))


async def create(session: AsyncSession, **fields: Any) -> Model:
    model = Model(**fields)
    session.add(model)
    await session.flush()
    return model


async def delete(session: AsyncSession, model: Model) -> None:
    await session.delete(model)
    await session.flush()
