"""Inference backends: the built-ins and user-defined ones (definitions as data)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Response
from pydantic import BaseModel, Field
from sqlalchemy import select

from maasbase.backends.registry import definition_from_dict
from maasbase.common.bounds import Text, shorten
from maasbase.common.errors import Conflict, InvalidRequest, NotFound
from maasbase.server.api.deps import Admin, Caller, Session, State
from maasbase.server.api.openapi import error_responses
from maasbase.server.db import backends as backends_db
from maasbase.server.db.tables import Model
from maasbase.server.schemas.common import Page

router = APIRouter(prefix="/api/v1/backends", tags=["backends"])

BackendName = Annotated[Text, Path(min_length=1, max_length=64)]


class BackendOut(BaseModel):
    name: str
    builtin: bool
    description: str
    versions: list[str]
    default_version: str | None
    supported_vendors: list[str]
    categories: list[str]
    distributed: bool
    health_path: str
    definition: dict[str, Any] = Field(description="The full definition.")


def _out(state: State, name: str) -> BackendOut:
    definition = state.backends.get(name)
    return BackendOut(
        name=definition.name,
        builtin=state.backends.is_builtin(definition.name),
        description=definition.description,
        versions=sorted(definition.versions),
        default_version=definition.default_version,
        supported_vendors=[v.value for v in definition.supported_vendors],
        categories=[c.value for c in definition.categories],
        distributed=definition.distributed,
        health_path=definition.health_path,
        definition=definition.model_dump(mode="json"),
    )


async def reload(state: State, session: Session) -> None:
    state.backends = await backends_db.registry(session)


@router.get("", response_model=Page[BackendOut])
async def list_backends(_caller: Caller, state: State) -> Page[BackendOut]:
    items = [_out(state, name) for name in state.backends.names()]
    return Page(items=items, total=len(items), page=1, per_page=max(1, len(items)))


@router.get("/{name}", response_model=BackendOut)
async def get_backend(name: BackendName, _caller: Caller, state: State) -> BackendOut:
    return _out(state, name)


@router.post("", response_model=BackendOut, status_code=201, responses=error_responses(409))
async def create_backend(
    body: dict[str, Any], _admin: Admin, state: State, session: Session
) -> BackendOut:
    """Add a backend from a definition (the same shape as the built-in YAML files)."""
    definition = definition_from_dict(body, source="the request body")
    if state.backends.is_builtin(definition.name):
        raise Conflict(f"{definition.name!r} is a built-in backend; pick another name")
    if await backends_db.get_by_name(session, definition.name) is not None:
        raise Conflict(f"backend {definition.name!r} exists; delete it first to replace it")
    await backends_db.create(session, definition.name, definition.model_dump(mode="json"))
    await session.commit()
    await reload(state, session)
    return _out(state, definition.name)


@router.delete("/{name}", status_code=204, responses=error_responses(409))
async def delete_backend(
    name: BackendName, _admin: Admin, state: State, session: Session
) -> Response:
    row = await backends_db.get_by_name(session, name)
    if row is None:
        if name in state.backends:
            raise InvalidRequest(f"{shorten(name)} is a built-in backend and cannot be deleted")
        raise NotFound(f"backend {shorten(name)} does not exist")
    users = list(await session.scalars(select(Model.name).where(Model.backend == row.name)))
    if users:
        raise Conflict(f"backend {name!r} is used by models {users}; delete or change them first")
    await backends_db.delete(session, row)
    await session.commit()
    await reload(state, session)
    return Response(status_code=204)
