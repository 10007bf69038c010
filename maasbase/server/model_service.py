"""Creating models: shared by the models API, the catalog and ``start --deploy``."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from maasbase.common.errors import Conflict, InvalidRequest, MaasError
from maasbase.server import model_env
from maasbase.server.db import models as models_db
from maasbase.server.db.tables import Model
from maasbase.server.schemas.models import ModelSpec, infer_categories, spec_hash
from maasbase.server.security.secret_box import SecretBox
from maasbase.server.state import ServerState


def row_fields(
    box: SecretBox, spec: ModelSpec, name: str, env: model_env.StoredEnv
) -> dict[str, object]:
    """The columns of a model row for ``spec`` whose variables are stored as ``env``."""
    data = spec.model_dump(mode="json", exclude={"env", "secret_env"})
    data["env"] = dict(env.plain)
    data["secret_env"] = dict(env.secret)
    data["categories"] = [c.value for c in infer_categories(spec, name)]
    hashed = spec.model_copy(update={"env": model_env.for_hash(box, env)})
    data["spec_hash"] = spec_hash(hashed)
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
    """``spec.env`` holds every variable's value; secret ones are encrypted here."""
    if await models_db.get_by_name(session, name) is not None:
        raise Conflict(f"a model named {name!r} exists; pick another name or PATCH it")
    check_backend(state, spec)
    box = state.secret_box
    env = model_env.for_new(box, spec.env, spec.secret_env)
    model = await models_db.create(
        session, name=name, description=description, **row_fields(box, spec, name, env)
    )
    await session.commit()
    state.changes.notify()
    return model
