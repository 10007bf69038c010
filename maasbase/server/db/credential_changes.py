"""Data functions for the credential-change feed gateways follow.

Writers lock one row (``FEED_LOCK`` in ``system_settings``) before they take an id, and
hold it until their transaction ends: changes therefore commit in the order of their
ids, and a gateway that has read up to id N never misses a change numbered below N that
commits later. (SQLite has one writer at a time anyway.)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from maasbase.server.db.tables import CredentialChange, SystemSetting

KEEP = timedelta(hours=1)
FEED_LOCK = "credential_feed_lock"


async def record(
    session: AsyncSession, now: datetime, *, access_key: str | None = None,
    user_id: int | None = None,
) -> None:  # fmt: skip
    """Add a change to the caller's transaction, and prune rows older than ``KEEP``."""
    lock = await session.get(SystemSetting, FEED_LOCK, with_for_update=True, populate_existing=True)
    if lock is None:  # a database the migration did not seed (tests that create tables)
        session.add(SystemSetting(key=FEED_LOCK, value="-"))
        await session.flush()
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
