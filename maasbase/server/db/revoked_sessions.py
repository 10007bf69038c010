"""Data functions for ended sessions (logout): a token whose id is here is refused."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession

from maasbase.server.db.tables import RevokedSession


async def is_revoked(session: AsyncSession, jti: str) -> bool:
    return await session.get(RevokedSession, jti) is not None


async def revoke(session: AsyncSession, jti: str, *, expires_at: datetime, now: datetime) -> None:
    """End the session ``jti`` and forget sessions that have expired anyway."""
    await session.execute(delete(RevokedSession).where(RevokedSession.expires_at <= now))
    if await session.get(RevokedSession, jti) is None:
        session.add(RevokedSession(jti=jti, expires_at=expires_at))
    await session.flush()
