"""Data functions for workers."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from maasbase.server.db.tables import Worker
from maasbase.server.policies.worker_state import WorkerFacts


async def get(session: AsyncSession, worker_id: int) -> Worker | None:
    return await session.get(Worker, worker_id)


async def get_by_name(session: AsyncSession, name: str) -> Worker | None:
    return (await session.execute(select(Worker).where(Worker.name == name))).scalar_one_or_none()


async def get_by_credential_access(session: AsyncSession, access: str) -> Worker | None:
    query = select(Worker).where(Worker.credential_access == access)
    return (await session.execute(query)).scalar_one_or_none()


async def list_page(
    session: AsyncSession, *, offset: int, limit: int, state: str | None = None
) -> tuple[list[Worker], int]:
    query = select(Worker)
    if state:
        query = query.where(Worker.state == state)
    total = await session.scalar(select(func.count()).select_from(query.subquery()))
    rows = await session.scalars(query.order_by(Worker.id).offset(offset).limit(limit))
    return list(rows), int(total or 0)


async def list_all(session: AsyncSession) -> list[Worker]:
    return list(await session.scalars(select(Worker).order_by(Worker.id)))


async def create(session: AsyncSession, **fields: Any) -> Worker:
    worker = Worker(**fields)
    session.add(worker)
    await session.flush()
    return worker


async def set_state_if_unchanged(
    session: AsyncSession,
    worker_id: int,
    *,
    expected_state: str,
    expected_heartbeat: datetime | None,
    state: str,
    message: str,
    now: datetime,
) -> bool:
    """Compare-and-set: change the state only if nothing moved since it was read."""
    heartbeat_matches = (
        Worker.last_heartbeat_at.is_(None)
        if expected_heartbeat is None
        else Worker.last_heartbeat_at == expected_heartbeat
    )
    result = await session.execute(
        update(Worker)
        .where(Worker.id == worker_id, Worker.state == expected_state, heartbeat_matches)
        .values(state=state, state_message=message, state_changed_at=now, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0))


async def delete(session: AsyncSession, worker: Worker) -> None:
    await session.delete(worker)
    await session.flush()


def record_state(worker: Worker, state: str, message: str, now: datetime) -> None:
    worker.state = state
    worker.state_message = message
    worker.state_changed_at = now


def facts_of(worker: Worker) -> WorkerFacts:
    return WorkerFacts(
        maintenance=worker.maintenance,
        registered_at=worker.registered_at.timestamp(),
        last_heartbeat=worker.last_heartbeat_at.timestamp() if worker.last_heartbeat_at else None,
    )
