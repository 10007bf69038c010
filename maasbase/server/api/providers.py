"""External providers: OpenAI-compatible servers and cloud APIs routed by the gateway."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field, HttpUrl

from maasbase.common.errors import Conflict, NotFound
from maasbase.server.api.deps import Admin, Session, State
from maasbase.server.db import providers as providers_db
from maasbase.server.db.tables import Provider
from maasbase.server.schemas.common import Page, Strict
from maasbase.server.schemas.models import MODEL_NAME_PATTERN

router = APIRouter(prefix="/api/v1/providers", tags=["providers"])


class ProviderCreate(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    base_url: HttpUrl = Field(description="Up to and including /v1, e.g. https://api.x.com/v1")
    api_key: str | None = Field(default=None, max_length=4096)
    models: list[str] = Field(min_length=1, max_length=1000)


class ProviderOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    base_url: str
    has_api_key: bool
    models: list[str]
    created_at: datetime


def _out(provider: Provider) -> ProviderOut:
    return ProviderOut(
        id=provider.id,
        name=provider.name,
        base_url=provider.base_url,
        has_api_key=bool(provider.api_key),
        models=list(provider.models),
        created_at=provider.created_at,
    )


@router.post("", response_model=ProviderOut, status_code=201)
async def create_provider(
    body: ProviderCreate, _admin: Admin, state: State, session: Session
) -> ProviderOut:
    import re

    for model in body.models:
        if not re.match(MODEL_NAME_PATTERN, model):
            raise Conflict(f"bad model name {model!r}: letters, digits and _ . : / -")
    if await providers_db.get_by_name(session, body.name) is not None:
        raise Conflict(f"a provider named {body.name!r} exists; pick another name")
    provider = await providers_db.create(
        session,
        name=body.name,
        base_url=str(body.base_url).rstrip("/"),
        api_key=state.secret_box.encrypt(body.api_key) if body.api_key else None,
        models=sorted(set(body.models)),
    )
    await session.commit()
    state.changes.notify()
    return _out(provider)


@router.get("", response_model=Page[ProviderOut])
async def list_providers(_admin: Admin, session: Session) -> Page[ProviderOut]:
    items = [_out(p) for p in await providers_db.list_all(session)]
    return Page(items=items, total=len(items), page=1, per_page=max(1, len(items)))


@router.delete("/{provider_id}", status_code=204)
async def delete_provider(
    provider_id: int, _admin: Admin, state: State, session: Session
) -> Response:
    provider = await providers_db.get(session, provider_id)
    if provider is None:
        raise NotFound(f"provider {provider_id} does not exist")
    await providers_db.delete(session, provider)
    await session.commit()
    state.changes.notify()
    return Response(status_code=204)
