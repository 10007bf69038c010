"""Creating models: shared by the models API, the catalog and ``start --deploy``."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from maasbase.common.errors import Conflict, InvalidRequest, MaasError
from maasbase.server.db import models as models_db
from maasbase.server.db.tables import Model
from maasbase.server.schemas.models import ModelSpec, infer_categories, spec_hash
from maasbase.server.state import ServerState


def row_fields(spec: ModelSpec, name: str) -> dict[str, object]:
    """The columns of a model row for ``spec``."""
    data = spec.model_dump(mode="json")
    data["categories"] = [c.value for c in infer_categories(spec, name)]
    data["spec_hash"] = spec_hash(spec)
    return data


def check_backend(state: ServerState, spec: ModelSpec) -> None:
    try:
        definition, _version = state.backends.get_version(spec.backend, spec.backend_version)
    except MaasError as exc:
        raise InvalidRequest(exc.message) from exc
    spec.backend = definition.name


async def create_model(
    session: AsyncSession, state: ServerState, *, name: str, spec: ModelSpec, description: str = ""
) -> Model:
    if await models_db.get_by_name(session, name) is not None:
        raise Conflict(f"a model named {name!r} exists; pick another name or PATCH it")
    check_backend(state, spec)
    model = await models_db.create(
        session, name=name, description=description, **row_fields(spec, name)
    )
    await session.commit()
    state.changes.notify()
    return model
