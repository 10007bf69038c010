"""Gateway identities: admins create, list and revoke them; a standalone gateway may also
register itself with the registration token. Each gets its own ``mbg_...`` credential,
the only credential that receives routing tables (provider keys), checks API keys and
sends usage."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Request, Response
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from maasbase.common.bounds import Id
from maasbase.common.errors import Conflict, Forbidden, NotFound, Unauthenticated
from maasbase.common.gateways import GatewayRegistered, GatewayRegistration
from maasbase.server import authn
from maasbase.server.api.deps import Admin, Paging, Session, State
from maasbase.server.api.openapi import error_responses
from maasbase.server.db import gateways as gateways_db
from maasbase.server.db.tables import Gateway
from maasbase.server.schemas.common import Page
from maasbase.server.schemas.gateways import GatewayCreate, GatewayCreated, GatewayOut
from maasbase.server.security import api_keys as key_material
from maasbase.server.state import ServerState

router = APIRouter(prefix="/api/v1/gateways", tags=["gateways"])


def _now(state: ServerState) -> datetime:
    return datetime.fromtimestamp(state.clock.now(), UTC)


def _name_taken(name: str, gateway_id: int | None) -> Conflict:
    where = f" (DELETE /api/v1/gateways/{gateway_id})" if gateway_id is not None else ""
    return Conflict(
        f"a gateway named {name!r} is already registered; revoke it first{where} "
        "or choose another --name"
    )


async def _create(
    session: AsyncSession, name: str, now: datetime, *, seen: bool
) -> tuple[Gateway, str]:
    """A new identity and its full credential (the secret exists only in the answer)."""
    existing = await gateways_db.get_by_name(session, name)
    if existing is not None:
        raise _name_taken(name, existing.id)
    material = key_material.generate(prefix=key_material.GATEWAY_PREFIX)
    try:
        gateway = await gateways_db.create(
            session,
            name=name,
            credential_access=material.access_key,
            credential_hash=key_material.hash_secret(material.secret),
            created_at=now,
            last_seen_at=now if seen else None,
        )
        await session.commit()
    except IntegrityError as exc:
        await session.rollback()
        raise _name_taken(name, None) from exc
    return gateway, material.full_key


@router.post("", response_model=GatewayCreated, status_code=201, responses=error_responses(409))
async def create_gateway(
    body: GatewayCreate, _admin: Admin, state: State, session: Session
) -> GatewayCreated:
    gateway, credential = await _create(session, body.name, _now(state), seen=False)
    return GatewayCreated(**GatewayOut.model_validate(gateway).model_dump(), credential=credential)


@router.get("", response_model=Page[GatewayOut])
async def list_gateways(_admin: Admin, session: Session, paging: Paging) -> Page[GatewayOut]:
    rows, total = await gateways_db.list_page(session, offset=paging.offset, limit=paging.per_page)
    return paging.page_of([GatewayOut.model_validate(g) for g in rows], total)


async def _load(session: AsyncSession, gateway_id: int) -> Gateway:
    gateway = await gateways_db.get(session, gateway_id)
    if gateway is None:
        raise NotFound(f"gateway {gateway_id} does not exist")
    return gateway


@router.get("/{gateway_id}", response_model=GatewayOut)
async def get_gateway(gateway_id: Id, _admin: Admin, session: Session) -> GatewayOut:
    return GatewayOut.model_validate(await _load(session, gateway_id))


@router.delete("/{gateway_id}", status_code=204)
async def revoke_gateway(gateway_id: Id, _admin: Admin, session: Session) -> Response:
    """Revoke: the credential is refused from the next call on."""
    await gateways_db.delete(session, await _load(session, gateway_id))
    await session.commit()
    return Response(status_code=204)


@router.post(
    "/register", response_model=GatewayRegistered, responses=error_responses(401, 403, 409)
)
async def register(
    body: GatewayRegistration, request: Request, state: State, session: Session
) -> GatewayRegistered:
    """With the registration token: a new identity under an unused name. With the
    gateway's own credential: the same identity again (a restart)."""
    presented = authn.bearer_token(request.headers.get("authorization"))
    if presented is None:
        raise Unauthenticated("registration needs 'Authorization: Bearer <registration token>'")
    now = _now(state)
    if key_material.looks_like_gateway_credential(presented):
        principal = await authn.from_gateway_credential(session, presented, now=now)
        if principal.name != body.name:
            raise Forbidden(
                f"this credential belongs to gateway {principal.name!r}, not {body.name!r}; "
                "keep the name or register with the registration token"
            )
        await session.commit()
        assert principal.gateway_id is not None
        return GatewayRegistered(id=principal.gateway_id, name=principal.name, credential=presented)
    if not await authn.is_registration_token(session, presented):
        raise Unauthenticated(
            "wrong registration token; use the token in the server's <data-dir>/token"
        )
    gateway, credential = await _create(session, body.name, now, seen=True)
    return GatewayRegistered(id=gateway.id, name=gateway.name, credential=credential)
