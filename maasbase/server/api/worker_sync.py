"""What workers should run (a long-poll watch) and how it is going (their reports)."""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Query
from sqlalchemy.ext.asyncio import AsyncSession

from maasbase.backends.registry import BackendRegistry
from maasbase.common.instances import (
    InstanceAssignment,
    InstanceReports,
    InstanceState,
    ModelSource,
    WorkerAssignments,
)
from maasbase.server import model_env
from maasbase.server.api.deps import Session, State, WorkerCaller
from maasbase.server.db import instances as instances_db
from maasbase.server.db import models as models_db
from maasbase.server.policies.instance_state import (
    ASSIGNED,
    IllegalTransition,
    Owner,
    restart_delay,
)
from maasbase.server.security.secret_box import SecretBox
from maasbase.server.state import ServerState

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/api/v1/workers", tags=["workers"])

# Even without a notification the database is read again this often, so changes made
# by another server replica reach the worker too.
REPOLL_SECONDS = 2.0


async def build_assignments(
    session: AsyncSession,
    worker_id: int,
    backends: BackendRegistry,
    box: SecretBox,
    reported: set[str] | None = None,
) -> WorkerAssignments:
    """What ``worker_id`` should run, with the full environment of each instance: secret
    variables are decrypted here, for this worker's own instances only."""
    models = {m.id: m for m in await models_db.list_all(session)}
    items: list[InstanceAssignment] = []
    for instance in await instances_db.for_worker(session, worker_id):
        model = models.get(instance.model_id)
        if model is None or InstanceState(instance.state) not in ASSIGNED:
            continue
        items.append(
            InstanceAssignment(
                instance_id=instance.id,
                name=instance.name,
                model_id=model.id,
                model_name=model.name,
                source=ModelSource.model_validate(model.source),
                backend=model.backend,
                backend_version=model.backend_version,
                backend_parameters=list(model.backend_parameters),
                env=model_env.reveal_for_worker(box, model, reported),
                gpu_vendor=instance.gpu_vendor,
                gpu_indexes=list(instance.gpu_indexes),
                tensor_parallel_size=instance.tensor_parallel_size,
                categories=list(model.categories),
                restart_count=instance.restart_count,
                backend_definition=_user_definition(backends, model.backend),
            )
        )
    canonical = json.dumps([i.model_dump(mode="json") for i in items], sort_keys=True)
    revision = hashlib.sha256(canonical.encode()).hexdigest()[:16]
    return WorkerAssignments(revision=revision, instances=items)


def _user_definition(backends: BackendRegistry, name: str) -> dict[str, Any] | None:
    if name not in backends or backends.is_builtin(name):
        return None
    return backends.get(name).model_dump(mode="json")


@router.get("/assignments", response_model=WorkerAssignments)
async def watch_assignments(
    caller: WorkerCaller,
    state: State,
    revision: str | None = Query(default=None, description="The revision the worker has."),
    wait: float = Query(default=0, ge=0, le=60, description="Seconds to wait for a change."),
) -> WorkerAssignments:
    """Answer at once when the assignments differ from ``revision``, else when they change
    or ``wait`` seconds pass."""
    assert caller.worker_id is not None
    deadline = state.clock.monotonic() + wait
    while True:
        version = state.changes.version
        async with state.sessions() as session:
            current = await build_assignments(
                session, caller.worker_id, state.backends, state.secret_box, state.reported_secrets
            )
        remaining = deadline - state.clock.monotonic()
        if current.revision != revision or remaining <= 0 or state.stopping:
            return current
        await state.changes.wait(version, min(remaining, REPOLL_SECONDS))


def _now(state: ServerState) -> datetime:
    return datetime.fromtimestamp(state.clock.now(), UTC)


@router.post("/instance-reports")
async def report_instances(
    body: InstanceReports, caller: WorkerCaller, state: State, session: Session
) -> dict[str, int]:
    now = _now(state)
    accepted = 0
    for report in body.reports:
        instance = await instances_db.get(session, report.instance_id)
        if instance is None or instance.worker_id != caller.worker_id:
            continue  # no longer this worker's: the next assignment list drops it
        if report.restart_count != instance.restart_count:
            continue  # about an earlier run of the instance
        message = report.message
        if report.state is InstanceState.ERROR and report.log_tail:
            message = f"{message}\n--- last log lines ---\n{report.log_tail}"
        try:
            changed = instances_db.transition(
                instance, report.state, owner=Owner.WORKER, message=message, now=now
            )
        except IllegalTransition as exc:
            logger.info("ignored report for instance %s: %s", instance.name, exc)
            continue
        instances_db.set_fields(
            instance,
            port=report.port,
            pid=report.pid,
            download=report.download.model_dump() if report.download else None,
            context_length=report.context_length if report.state is InstanceState.RUNNING else None,
        )
        if changed and report.state is InstanceState.ERROR:
            delay = restart_delay(instance.restart_count)
            instance.next_restart_at = datetime.fromtimestamp(now.timestamp() + delay, UTC)
        accepted += 1
    await session.commit()
    state.changes.notify()
    return {"accepted": accepted}
