"""Data functions for the credential-change feed gateways follow."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from maasbase.server.db.tables import CredentialChange

KEEP = timedelta(hours=1)


async def record(
    session: AsyncSession, now: datetime, *, access_key: str | None = None,
    user_id: int | None = None,
) -> None:  # fmt: skip
    """Add a change to the caller's transaction, and prune rows older than ``KEEP``."""
    session.add(CredentialChange(access_key=access_key, user_id=user_id, at=now))
    await session.execute(delete(CredentialChange).where(CredentialChange.at < now - KEEP))
    await session.flush()


@dataclass(frozen=True)
class Bounds:
    oldest: int | None
    newest: int


async def bounds(session: AsyncSession) -> Bounds:
    row = (
        await session.execute(select(func.min(CredentialChange.id), func.max(CredentialChange.id)))
    ).one()
    return Bounds(oldest=row[0], newest=int(row[1] or 0))


async def after(session: AsyncSession, cursor: int, limit: int) -> list[CredentialChange]:
    rows = await session.scalars(
        select(CredentialChange)
        .where(CredentialChange.id > cursor)
        .order_by(CredentialChange.id)
        .limit(limit)
    )
    return list(rows)
