"""Data functions for cluster-wide settings (key/value)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from maasbase.server.db.tables import SystemSetting

# Held the session-signing secret in older versions; removed at start.
JWT_SECRET = "jwt_secret"
REGISTRATION_TOKEN_HASH = "registration_token_sha256"


async def get(session: AsyncSession, key: str) -> str | None:
    row = await session.get(SystemSetting, key)
    return row.value if row else None


async def put(session: AsyncSession, key: str, value: str) -> None:
    row = await session.get(SystemSetting, key)
    if row is None:
        session.add(SystemSetting(key=key, value=value))
    else:
        row.value = value
    await session.flush()


async def delete(session: AsyncSession, key: str) -> bool:
    """Remove ``key``; whether it was there."""
    row = await session.get(SystemSetting, key)
    if row is None:
        return False
    await session.delete(row)
    await session.flush()
    return True
