"""The model catalog: list presets, deploy one by name."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from pydantic import BaseModel, Field

from maasbase.common.bounds import Text
from maasbase.server import catalog, model_service
from maasbase.server.api.deps import Admin, Caller, Session, State
from maasbase.server.api.models import model_out
from maasbase.server.api.openapi import error_responses
from maasbase.server.schemas.common import Page, Strict
from maasbase.server.schemas.models import MODEL_NAME_PATTERN, ModelOut

router = APIRouter(prefix="/api/v1/catalog", tags=["catalog"])


class CatalogItem(BaseModel):
    name: str
    description: str
    categories: list[str]
    backend: str
    available_offline: bool = Field(description="Its weights are installed on the server.")


class CatalogDeploy(Strict):
    name: str | None = Field(default=None, pattern=MODEL_NAME_PATTERN)
    replicas: int = Field(default=1, ge=0, le=1000)


@router.get("", response_model=Page[CatalogItem])
async def list_catalog(_caller: Caller) -> Page[CatalogItem]:
    items = [
        CatalogItem(
            name=e.name,
            description=e.description,
            categories=[c.value for c in e.categories],
            backend=e.backend,
            available_offline=e.available_offline(),
        )
        for e in catalog.entries()
    ]
    return Page(items=items, total=len(items), page=1, per_page=len(items) or 1)


@router.post(
    "/{entry}/deploy", response_model=ModelOut, status_code=201, responses=error_responses(409)
)
async def deploy(
    entry: Annotated[Text, Path(max_length=128)],
    body: CatalogDeploy,
    _admin: Admin,
    state: State,
    session: Session,
) -> ModelOut:
    found = catalog.find(entry)
    model = await model_service.create_model(
        session,
        state,
        name=body.name or found.name,
        spec=found.spec(replicas=body.replicas),
        description=found.description,
    )
    return model_out(model, [])
