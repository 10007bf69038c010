"""Workers: registration and heartbeats (worker credentials), inspection and admin actions."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Request, Response

from maasbase.common.bounds import Id
from maasbase.common.errors import Conflict, Forbidden, NotFound, Unauthenticated
from maasbase.common.hardware import HardwareReport
from maasbase.common.workers import (
    Heartbeat,
    HeartbeatAck,
    WorkerRegistered,
    WorkerRegistration,
    WorkerState,
)
from maasbase.server import authn
from maasbase.server.api.deps import Admin, Paging, Session, State, WorkerCaller
from maasbase.server.api.openapi import error_responses
from maasbase.server.db import workers as workers_db
from maasbase.server.db.tables import Worker
from maasbase.server.policies import worker_state
from maasbase.server.policies.worker_state import Owner
from maasbase.server.schemas.common import Page
from maasbase.server.schemas.workers import GpuOut, WorkerOut, WorkerUpdate
from maasbase.server.security import api_keys as key_material
from maasbase.server.security.worker_secrets import data_plane_secret, worker_api_secret
from maasbase.server.state import ServerState

router = APIRouter(prefix="/api/v1", tags=["workers"])


def _now(state: ServerState) -> datetime:
    return datetime.fromtimestamp(state.clock.now(), UTC)


def _apply(state: ServerState, worker: Worker, owner: Owner) -> None:
    change = worker_state.decide(
        WorkerState(worker.state),
        workers_db.facts_of(worker),
        now=state.clock.now(),
        timeout=state.settings.worker_timeout,
        owner=owner,
    )
    if change is not None:
        workers_db.record_state(worker, change.to.value, change.message, _now(state))


def to_out(worker: Worker) -> WorkerOut:
    hardware = HardwareReport.model_validate(worker.hardware)
    return WorkerOut.model_validate(
        {
            **{c: getattr(worker, c) for c in WorkerOut.model_fields if hasattr(worker, c)},
            "hardware": hardware,
            "simulated": hardware.is_simulated,
        }
    )


async def _registration_allowed(request: Request, state: State, session: Session) -> str | None:
    """The presented credential: the registration token (``None`` returned) or a worker
    credential (returned, to re-attach to its record)."""
    presented = authn.bearer_token(request.headers.get("authorization"))
    if presented is None:
        raise Unauthenticated("registration needs 'Authorization: Bearer <registration token>'")
    if key_material.looks_like_worker_credential(presented):
        return presented
    if not await authn.is_registration_token(session, presented):
        raise Unauthenticated(
            "wrong registration token; use the token in the server's <data-dir>/token"
        )
    return None


@router.post(
    "/workers/register", response_model=WorkerRegistered, responses=error_responses(401, 403)
)
async def register(
    body: WorkerRegistration, request: Request, state: State, session: Session
) -> WorkerRegistered:
    credential = await _registration_allowed(request, state, session)
    now = _now(state)
    if credential is not None:
        principal = await authn.from_worker_credential(session, credential)
        worker = await workers_db.get(session, principal.worker_id or 0)
        assert worker is not None
        if worker.name != body.name:
            raise Forbidden(
                f"this credential belongs to worker {worker.name!r}, not {body.name!r}; "
                "keep the name or register with the registration token"
            )
    else:
        worker = await workers_db.get_by_name(session, body.name)
        if worker is not None:
            # The token creates workers; only a worker's own credential re-attaches to it.
            raise Conflict(
                f"a worker named {body.name!r} is already registered; delete it first "
                f"(DELETE /api/v1/workers/{worker.id}) or choose another --name"
            )
    material = key_material.generate(prefix=key_material.WORKER_PREFIX)
    fields = {
        "labels": body.labels,
        "address": body.address,
        "port": body.port,
        "version": body.version,
        "hardware": body.hardware.model_dump(mode="json"),
        "registered_at": now,
    }
    if worker is None:
        worker = await workers_db.create(
            session,
            name=body.name,
            state=WorkerState.NOT_READY.value,
            state_message="registered; waiting for the first heartbeat",
            maintenance=False,
            credential_access=material.access_key,
            credential_hash=key_material.hash_secret(material.secret),
            state_changed_at=now,
            **fields,
        )
    else:
        for key, value in fields.items():
            setattr(worker, key, value)
        _apply(state, worker, Owner.REGISTRATION)
    issued = material.full_key if credential is None else credential
    await session.commit()
    return WorkerRegistered(
        id=worker.id,
        name=worker.name,
        credential=issued,
        api_secret=worker_api_secret(state.worker_secret_key, worker.id, worker.credential_access),
        data_plane_secret=data_plane_secret(
            state.worker_secret_key, worker.id, worker.credential_access
        ),
        heartbeat_interval=state.settings.heartbeat_interval,
        state=WorkerState(worker.state),
    )


@router.post("/workers/heartbeat", response_model=HeartbeatAck)
async def heartbeat(
    body: Heartbeat, caller: WorkerCaller, state: State, session: Session
) -> HeartbeatAck:
    worker = await workers_db.get(session, caller.worker_id or 0)
    if worker is None:
        raise Unauthenticated("this worker was deleted; register again")
    worker.hardware = body.hardware.model_dump(mode="json")
    worker.last_heartbeat_at = _now(state)
    _apply(state, worker, Owner.HEARTBEAT)
    await session.commit()
    return HeartbeatAck(
        state=WorkerState(worker.state), heartbeat_interval=state.settings.heartbeat_interval
    )


async def _load(session: Session, worker_id: int) -> Worker:
    worker = await workers_db.get(session, worker_id)
    if worker is None:
        raise NotFound(f"worker {worker_id} does not exist")
    return worker


@router.get("/workers", response_model=Page[WorkerOut])
async def list_workers(
    _admin: Admin, session: Session, paging: Paging, state: WorkerState | None = None
) -> Page[WorkerOut]:
    rows, total = await workers_db.list_page(
        session,
        offset=paging.offset,
        limit=paging.per_page,
        state=state.value if state else None,
    )
    return paging.page_of([to_out(w) for w in rows], total)


@router.get("/workers/{worker_id}", response_model=WorkerOut)
async def get_worker(worker_id: Id, _admin: Admin, session: Session) -> WorkerOut:
    return to_out(await _load(session, worker_id))


@router.patch("/workers/{worker_id}", response_model=WorkerOut)
async def update_worker(
    worker_id: Id, body: WorkerUpdate, _admin: Admin, state: State, session: Session
) -> WorkerOut:
    worker = await _load(session, worker_id)
    if body.labels is not None:
        worker.labels = body.labels
    if body.maintenance is not None and body.maintenance != worker.maintenance:
        worker.maintenance = body.maintenance
        _apply(state, worker, Owner.ADMIN)
    await session.commit()
    return to_out(worker)


@router.delete("/workers/{worker_id}", status_code=204)
async def delete_worker(worker_id: Id, _admin: Admin, session: Session) -> Response:
    await workers_db.delete(session, await _load(session, worker_id))
    await session.commit()
    return Response(status_code=204)


@router.get("/gpus", response_model=Page[GpuOut])
async def list_gpus(
    _admin: Admin, session: Session, paging: Paging, worker_id: Id | None = None
) -> Page[GpuOut]:
    gpus: list[GpuOut] = []
    for worker in await workers_db.list_all(session):
        if worker_id is not None and worker.id != worker_id:
            continue
        for gpu in HardwareReport.model_validate(worker.hardware).gpus:
            gpus.append(
                GpuOut(
                    **gpu.model_dump(),
                    id=f"{worker.name}:{gpu.vendor}:{gpu.index}",
                    worker_id=worker.id,
                    worker_name=worker.name,
                    worker_state=WorkerState(worker.state),
                )
            )
    page = gpus[paging.offset : paging.offset + paging.per_page]
    return paging.page_of(page, len(gpus))
