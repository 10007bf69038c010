"""Data functions for users."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from maasbase.server.db.tables import User


async def get(session: AsyncSession, user_id: int) -> User | None:
    return await session.get(User, user_id)


async def get_by_username(session: AsyncSession, username: str) -> User | None:
    result = await session.execute(select(User).where(User.username == username))
    return result.scalar_one_or_none()


async def list_page(
    session: AsyncSession, *, offset: int, limit: int, search: str | None = None
) -> tuple[list[User], int]:
    query = select(User)
    if search:
        query = query.where(User.username.contains(search, autoescape=True))
    total = await session.scalar(select(func.count()).select_from(query.subquery()))
    rows = await session.scalars(query.order_by(User.id).offset(offset).limit(limit))
    return list(rows), int(total or 0)


async def create(
    session: AsyncSession,
    *,
    username: str,
    password_hash: str,
    is_admin: bool,
    full_name: str | None = None,
) -> User:
    user = User(
        username=username,
        password_hash=password_hash,
        is_admin=is_admin,
        is_active=True,
        full_name=full_name,
        token_version=1,
    )
    session.add(user)
    await session.flush()
    return user


def set_password(user: User, password_hash: str) -> None:
    user.password_hash = password_hash
    user.token_version += 1


async def lock_active_admins(session: AsyncSession) -> list[int]:
    """Ids of the active admins, their rows locked until the transaction ends.

    PostgreSQL and MySQL lock the rows (``FOR UPDATE``): a second transaction that wants
    them waits, then sees the first one's changes. SQLite has no row locks; there the
    engine's single connection runs one transaction at a time.
    """
    rows = await session.scalars(
        select(User.id).where(User.is_admin, User.is_active).order_by(User.id).with_for_update()
    )
    return list(rows)


async def delete(session: AsyncSession, user: User) -> None:
    await session.delete(user)
    await session.flush()
