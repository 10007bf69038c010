"""The credential-change feed gateways follow (``GET /api/v1/gateway/key-changes``).

Routes that revoke a key, change its limits, or deactivate, delete, re-limit or
re-password a user write a row in the same transaction (``record_key``,
``record_user``) and wake the watchers after the commit. A watch answers at once when
there are changes after the gateway's cursor; else it waits for a wake-up, re-reading
the table every ``REPOLL_SECONDS`` for changes written by other server replicas.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from maasbase.common.routing import CredentialChange, CredentialChanges
from maasbase.server.db import credential_changes as changes_db
from maasbase.server.state import ServerState

REPOLL_SECONDS = 0.5
PAGE = 1000


def _now(state: ServerState) -> datetime:
    return datetime.fromtimestamp(state.clock.now(), UTC)


async def record_key(session: AsyncSession, state: ServerState, access_key: str) -> None:
    await changes_db.record(session, _now(state), access_key=access_key)


async def record_user(session: AsyncSession, state: ServerState, user_id: int) -> None:
    await changes_db.record(session, _now(state), user_id=user_id)


async def read(session: AsyncSession, after: int | None) -> CredentialChanges:
    """The changes after ``after``; with no cursor, the newest id (nothing to replay)."""
    bounds = await changes_db.bounds(session)
    if after is None:
        return CredentialChanges(cursor=bounds.newest)
    pruned = bounds.oldest is not None and bounds.oldest > after + 1
    if after > bounds.newest or pruned:  # a replaced database, or a gateway away too long
        return CredentialChanges(cursor=bounds.newest, reset=True)
    rows = await changes_db.after(session, after, PAGE)
    if not rows:
        return CredentialChanges(cursor=after)
    return CredentialChanges(
        cursor=rows[-1].id,
        changes=[
            CredentialChange(id=row.id, access_key=row.access_key, user_id=row.user_id)
            for row in rows
        ],
    )


async def watch(state: ServerState, after: int | None, wait: float) -> CredentialChanges:
    """At once when there are changes after ``after`` (or no cursor was given); else
    when one is written, or after ``wait`` seconds with none."""
    deadline = state.clock.monotonic() + wait
    while True:
        version = state.changes.version
        async with state.sessions() as session:
            answer = await read(session, after)
        remaining = deadline - state.clock.monotonic()
        if after is None or answer.changes or answer.reset or remaining <= 0 or state.stopping:
            return answer
        await state.changes.wait(version, min(remaining, REPOLL_SECONDS))
