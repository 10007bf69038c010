"""External providers: OpenAI-compatible servers and cloud APIs routed by the gateway."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Response
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    UrlConstraints,
    model_validator,
)

from maasbase.common.bounds import Id, Text
from maasbase.common.errors import Conflict, InvalidRequest, NotFound
from maasbase.server.api.deps import Admin, Session, State
from maasbase.server.api.openapi import error_responses
from maasbase.server.db import providers as providers_db
from maasbase.server.db.tables import Provider
from maasbase.server.schemas.common import Page, Strict
from maasbase.server.schemas.models import MODEL_NAME_PATTERN

router = APIRouter(prefix="/api/v1/providers", tags=["providers"])

MAX_BASE_URL = 512


def _fits_column(url: HttpUrl) -> HttpUrl:
    if len(str(url)) > MAX_BASE_URL:
        raise ValueError(f"the URL is longer than {MAX_BASE_URL} characters once normalized")
    return url


BaseUrl = Annotated[HttpUrl, UrlConstraints(max_length=MAX_BASE_URL), AfterValidator(_fits_column)]
ModelNames = Annotated[
    list[Annotated[str, Field(pattern=MODEL_NAME_PATTERN)]], Field(min_length=1, max_length=1000)
]


class ProviderCreate(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    base_url: BaseUrl = Field(description="Up to and including /v1, e.g. https://api.x.com/v1")
    api_key: Text | None = Field(default=None, max_length=4096)
    models: ModelNames


class ProviderUpdate(Strict):
    """Absent fields stay as they are; ``api_key: null`` removes the key. A new
    ``base_url`` for a provider with a stored key needs ``api_key`` too (the key meant for
    the old host is not sent to a new one unasked), or ``keep_api_key: true``."""

    base_url: BaseUrl | None = None
    api_key: Text | None = Field(default=None, max_length=4096)
    keep_api_key: bool = Field(
        default=False,
        description="With a new base_url: send the stored API key to the new host.",
    )
    models: ModelNames | None = Field(default=None, description="Replaces the list.")

    @model_validator(mode="after")
    def _no_null_except_key(self) -> ProviderUpdate:
        for field in ("base_url", "models"):
            if field in self.model_fields_set and getattr(self, field) is None:
                raise ValueError(f"{field} cannot be null; leave it out to keep it")
        return self


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


@router.post("", response_model=ProviderOut, status_code=201, responses=error_responses(409))
async def create_provider(
    body: ProviderCreate, _admin: Admin, state: State, session: Session
) -> ProviderOut:
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


@router.patch("/{provider_id}", response_model=ProviderOut)
async def update_provider(
    provider_id: Id, body: ProviderUpdate, _admin: Admin, state: State, session: Session
) -> ProviderOut:
    provider = await providers_db.get(session, provider_id)
    if provider is None:
        raise NotFound(f"provider {provider_id} does not exist")
    if body.base_url is not None:
        base_url = str(body.base_url).rstrip("/")
        moved = base_url != provider.base_url
        key_unsettled = "api_key" not in body.model_fields_set and not body.keep_api_key
        if moved and provider.api_key and key_unsettled:
            raise InvalidRequest(
                f"provider {provider.name!r} has a stored API key meant for "
                f"{provider.base_url}; to change base_url send the key for the new host in "
                "api_key (or api_key: null to drop it), or keep_api_key: true to send the "
                "stored key there"
            )
        provider.base_url = base_url
    if "api_key" in body.model_fields_set:
        provider.api_key = state.secret_box.encrypt(body.api_key) if body.api_key else None
    if body.models is not None:
        provider.models = sorted(set(body.models))
    await session.commit()
    state.changes.notify()
    return _out(provider)


@router.delete("/{provider_id}", status_code=204)
async def delete_provider(
    provider_id: Id, _admin: Admin, state: State, session: Session
) -> Response:
    provider = await providers_db.get(session, provider_id)
    if provider is None:
        raise NotFound(f"provider {provider_id} does not exist")
    await providers_db.delete(session, provider)
    await session.commit()
    state.changes.notify()
    return Response(status_code=204)
