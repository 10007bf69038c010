"""Data functions for model instances, and the one write path for their state."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from maasbase.common.instances import InstanceState
from maasbase.server.db.tables import ModelInstance
from maasbase.server.policies import instance_state
from maasbase.server.policies.instance_state import Owner

MAX_MESSAGE = 4000


async def get(session: AsyncSession, instance_id: int) -> ModelInstance | None:
    return await session.get(ModelInstance, instance_id)


async def list_page(
    session: AsyncSession,
    *,
    offset: int,
    limit: int,
    model_id: int | None = None,
    worker_id: int | None = None,
    state: str | None = None,
) -> tuple[list[ModelInstance], int]:
    query = select(ModelInstance)
    if model_id is not None:
        query = query.where(ModelInstance.model_id == model_id)
    if worker_id is not None:
        query = query.where(ModelInstance.worker_id == worker_id)
    if state is not None:
        query = query.where(ModelInstance.state == state)
    total = await session.scalar(select(func.count()).select_from(query.subquery()))
    rows = await session.scalars(query.order_by(ModelInstance.id).offset(offset).limit(limit))
    return list(rows), int(total or 0)


async def list_all(session: AsyncSession) -> list[ModelInstance]:
    return list(await session.scalars(select(ModelInstance).order_by(ModelInstance.id)))


async def for_model(session: AsyncSession, model_id: int) -> list[ModelInstance]:
    query = select(ModelInstance).where(ModelInstance.model_id == model_id)
    return list(await session.scalars(query.order_by(ModelInstance.id)))


async def for_worker(session: AsyncSession, worker_id: int) -> list[ModelInstance]:
    query = select(ModelInstance).where(ModelInstance.worker_id == worker_id)
    return list(await session.scalars(query.order_by(ModelInstance.id)))


async def create(
    session: AsyncSession, *, model_id: int, model_name: str, spec_hash: str, now: datetime
) -> ModelInstance:
    instance = ModelInstance(
        name=f"{model_name.replace('/', '-').replace(':', '-')[:140]}-{secrets.token_hex(3)}",
        model_id=model_id,
        spec_hash=spec_hash,
        state=InstanceState.PENDING.value,
        state_message="waiting to be scheduled",
        state_changed_at=now,
        gpu_indexes=[],
        claim={},
        restart_count=0,
        tensor_parallel_size=1,
    )
    session.add(instance)
    await session.flush()
    return instance


def transition(
    instance: ModelInstance, new: InstanceState, *, owner: Owner, message: str, now: datetime
) -> bool:
    """The only way an instance's state changes. Returns False when nothing changed."""
    current = InstanceState(instance.state)
    message = message[:MAX_MESSAGE]
    if current is new:
        if instance.state_message != message:
            instance.state_message = message
        return False
    instance_state.check(current, new, owner)
    instance.state = new.value
    instance.state_message = message
    instance.state_changed_at = now
    return True


def release_placement(instance: ModelInstance) -> None:
    instance.worker_id = None
    instance.gpu_vendor = None
    instance.gpu_indexes = []
    instance.claim = {}
    instance.port = None
    instance.pid = None
    instance.download = None


def set_fields(instance: ModelInstance, **fields: Any) -> None:
    for key, value in fields.items():
        setattr(instance, key, value)


async def delete(session: AsyncSession, instance: ModelInstance) -> None:
    await session.delete(instance)
    await session.flush()
