"""Models (deployments) and their instances."""

from __future__ import annotations

from collections import Counter
from typing import Annotated

from fastapi import APIRouter, Query, Response

from maasbase.common.bounds import Id, Text
from maasbase.common.errors import MaasError, NotFound
from maasbase.common.instances import InstanceState
from maasbase.server import model_env, model_service
from maasbase.server.api.deps import Admin, Caller, Paging, Session, State
from maasbase.server.api.openapi import error_responses
from maasbase.server.controllers.scheduling import Scheduling, claim_to_json
from maasbase.server.db import instances as instances_db
from maasbase.server.db import models as models_db
from maasbase.server.db import workers as workers_db
from maasbase.server.db.tables import Model, ModelInstance
from maasbase.server.scheduler import Placement, evaluate, explain
from maasbase.server.schemas.common import Page, validate_as
from maasbase.server.schemas.models import (
    EvaluationOut,
    EvaluationPlacement,
    InstanceOut,
    InstanceSummary,
    ModelCreate,
    ModelOut,
    ModelSpec,
    ModelUpdate,
    spec_of_row,
)

router = APIRouter(prefix="/api/v1", tags=["models"])


def model_out(model: Model, instances: list[ModelInstance]) -> ModelOut:
    states = Counter(i.state for i in instances)
    summary = InstanceSummary(
        total=len(instances), running=states.get("running", 0), by_state=dict(states)
    )
    out = ModelOut.model_validate(model)
    return out.model_copy(update={"instances": summary})


def instance_out(
    instance: ModelInstance, model: Model | None, worker_name: str | None
) -> InstanceOut:
    return InstanceOut.model_validate(
        {
            **{c: getattr(instance, c) for c in InstanceOut.model_fields if hasattr(instance, c)},
            "model_name": model.name if model else "",
            "worker_name": worker_name,
            "outdated": model is not None and instance.spec_hash != model.spec_hash,
        }
    )


async def _load(session: Session, model_id: int) -> Model:
    model = await models_db.get(session, model_id)
    if model is None:
        raise NotFound(f"model {model_id} does not exist")
    return model


@router.post("/models", response_model=ModelOut, status_code=201, responses=error_responses(409))
async def create_model(
    body: ModelCreate, _admin: Admin, state: State, session: Session
) -> ModelOut:
    spec = ModelSpec.model_validate(body.model_dump(exclude={"name", "description"}))
    model = await model_service.create_model(
        session, state, name=body.name, spec=spec, description=body.description
    )
    return model_out(model, [])


@router.get("/models", response_model=Page[ModelOut])
async def list_models(
    _caller: Caller,
    session: Session,
    paging: Paging,
    search: Annotated[Text | None, Query(max_length=128)] = None,
) -> Page[ModelOut]:
    rows, total = await models_db.list_page(
        session, offset=paging.offset, limit=paging.per_page, search=search
    )
    items = [model_out(m, await instances_db.for_model(session, m.id)) for m in rows]
    return paging.page_of(items, total)


@router.get("/models/{model_id}", response_model=ModelOut)
async def get_model(model_id: Id, _caller: Caller, session: Session) -> ModelOut:
    model = await _load(session, model_id)
    return model_out(model, await instances_db.for_model(session, model.id))


@router.patch("/models/{model_id}", response_model=ModelOut)
async def update_model(
    model_id: Id, body: ModelUpdate, _admin: Admin, state: State, session: Session
) -> ModelOut:
    model = await _load(session, model_id)
    merged = spec_of_row(model).model_dump(mode="json", exclude={"env", "secret_env"})
    changes = body.model_dump(mode="json", exclude_unset=True)
    if "description" in changes:
        model.description = changes.pop("description") or ""
    env = model_env.patched(
        state.secret_box,
        model_env.of_row(model),
        changes.pop("env", None) or {},
        changes.pop("secret_env", None) or [],
    )
    merged.update(changes)
    spec = validate_as(ModelSpec, {**merged, "env": env.plain})
    model_service.check_backend(state, spec)
    for key, value in model_service.row_fields(state.secret_box, spec, model.name, env).items():
        setattr(model, key, value)
    await session.commit()
    state.changes.notify()
    return model_out(model, await instances_db.for_model(session, model.id))


@router.delete("/models/{model_id}", status_code=204)
async def delete_model(model_id: Id, _admin: Admin, state: State, session: Session) -> Response:
    await models_db.delete(session, await _load(session, model_id))
    await session.commit()
    state.changes.notify()
    return Response(status_code=204)


@router.get("/model-instances", response_model=Page[InstanceOut])
async def list_instances(
    _caller: Caller,
    session: Session,
    paging: Paging,
    model_id: Id | None = None,
    worker_id: Id | None = None,
    state: InstanceState | None = None,
) -> Page[InstanceOut]:
    rows, total = await instances_db.list_page(
        session,
        offset=paging.offset,
        limit=paging.per_page,
        model_id=model_id,
        worker_id=worker_id,
        state=state.value if state else None,
    )
    models = {m.id: m for m in await models_db.list_all(session)}
    workers = {w.id: w.name for w in await workers_db.list_all(session)}
    items = [instance_out(i, models.get(i.model_id), workers.get(i.worker_id or 0)) for i in rows]
    return paging.page_of(items, total)


@router.get("/model-instances/{instance_id}", response_model=InstanceOut)
async def get_instance(instance_id: Id, _caller: Caller, session: Session) -> InstanceOut:
    instance = await instances_db.get(session, instance_id)
    if instance is None:
        raise NotFound(f"model instance {instance_id} does not exist")
    model = await models_db.get(session, instance.model_id)
    worker = await workers_db.get(session, instance.worker_id) if instance.worker_id else None
    return instance_out(instance, model, worker.name if worker else None)


@router.post("/model-evaluations", response_model=EvaluationOut)
async def evaluate_model(
    body: ModelSpec, _admin: Admin, state: State, session: Session
) -> EvaluationOut:
    """Dry run of the scheduler for one replica of ``body``: creates and reserves nothing."""
    scheduling = Scheduling(state)
    try:
        request = await scheduling.request_for(body, name="evaluation")
    except MaasError as exc:
        return EvaluationOut(schedulable=False, message=exc.message)
    capacity = await scheduling.capacity(session)
    result = evaluate(request, capacity)
    names = {w.id: w.name for w in capacity.workers()}
    if not isinstance(result, Placement):
        return EvaluationOut(
            schedulable=False, message=result.message, reasons=dict(result.reasons)
        )
    gpus = result.claim.gpus
    return EvaluationOut(
        schedulable=True,
        message=result.explanation,
        placement=EvaluationPlacement(
            worker_id=result.worker_ids[0],
            worker_name=names.get(result.worker_ids[0], ""),
            gpu_vendor=gpus[0].gpu.vendor.value if gpus else None,
            gpu_indexes=[c.gpu.index for c in gpus],
            tensor_parallel_size=max(1, result.tp_size),
            claim=claim_to_json(result.claim),
            score=result.score,
        ),
        estimate=result.estimate.explain() if result.estimate else None,
        reasons=explain(request, capacity),
    )
