"""API keys: create (secret shown once, never wider than the creator), list, show,
set limits, revoke."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Query, Response
from sqlalchemy.exc import IntegrityError

from maasbase.common.auth import Principal, Scope
from maasbase.common.bounds import Id, shorten
from maasbase.common.errors import Conflict, Forbidden, InvalidRequest, NotFound
from maasbase.server import key_changes
from maasbase.server.api.deps import Admin, Caller, Paging, Session, State
from maasbase.server.api.openapi import error_responses
from maasbase.server.db import api_keys as api_keys_db
from maasbase.server.db.tables import ApiKey
from maasbase.server.key_policy import SESSION, KeyPowers, excess
from maasbase.server.schemas.api_keys import ApiKeyCreate, ApiKeyCreated, ApiKeyLimits, ApiKeyOut
from maasbase.server.schemas.common import Page
from maasbase.server.security import api_keys as key_material

router = APIRouter(prefix="/api/v1/api-keys", tags=["api-keys"])


def _owner_id(caller: Principal) -> int:
    if caller.user_id is None:
        raise InvalidRequest("API keys belong to users; log in as a user to manage them")
    return caller.user_id


async def _load_visible(session: Session, caller: Principal, key_id: int) -> ApiKey:
    key = await api_keys_db.get(session, key_id)
    if key is None or (not caller.is_admin and key.user_id != caller.user_id):
        raise NotFound(f"API key {key_id} does not exist")
    return key


def powers_of(key: ApiKey) -> KeyPowers:
    return KeyPowers(
        scope=Scope(key.scope),
        allowed_models=None if key.allowed_models is None else frozenset(key.allowed_models),
        expires_at=key.expires_at,
        rpm_limit=key.rpm_limit,
        tpm_limit=key.tpm_limit,
        token_quota=key.token_quota,
        quota_period=key.quota_period,
    )


def wanted_powers(body: ApiKeyCreate) -> KeyPowers:
    return KeyPowers(
        scope=body.scope,
        allowed_models=None if body.allowed_models is None else frozenset(body.allowed_models),
        expires_at=body.expires_at,
        rpm_limit=body.rpm_limit,
        tpm_limit=body.tpm_limit,
        token_quota=body.token_quota,
        quota_period=body.quota_period,
    )


async def _creator_powers(session: Session, caller: Principal) -> KeyPowers:
    """A session may give every power; an API key only what it has itself."""
    if caller.api_key_id is None:
        return SESSION
    key = await api_keys_db.get(session, caller.api_key_id)
    assert key is not None  # it authenticated this request
    return powers_of(key)


@router.post("", response_model=ApiKeyCreated, status_code=201, responses=error_responses(409))
async def create_key(
    body: ApiKeyCreate, caller: Caller, session: Session, state: State
) -> ApiKeyCreated:
    user_id = _owner_id(caller)
    now = datetime.fromtimestamp(state.clock.now(), UTC)
    if body.expires_at is not None and body.expires_at <= now:
        raise InvalidRequest("expires_at is in the past; give a future time")
    wider = excess(await _creator_powers(session, caller), wanted_powers(body))
    if wider is not None:
        raise Forbidden(f"a key cannot create a key wider than itself: {wider}")
    if await api_keys_db.name_taken(session, user_id, body.name):
        raise Conflict(f"you already have an API key named {shorten(body.name)}; pick another name")
    material = key_material.generate()
    try:
        key = await api_keys_db.create(
            session,
            user_id=user_id,
            name=body.name,
            access_key=material.access_key,
            secret_hash=key_material.hash_secret(material.secret),
            scope=body.scope.value,
            allowed_models=body.allowed_models,
            expires_at=body.expires_at,
            rpm_limit=body.rpm_limit,
            tpm_limit=body.tpm_limit,
            token_quota=body.token_quota,
            quota_period=body.quota_period,
        )
        await session.commit()
    except IntegrityError as exc:
        await session.rollback()
        raise Conflict(
            f"you already have an API key named {shorten(body.name)}; pick another name"
        ) from exc
    out = ApiKeyOut.model_validate(key)
    return ApiKeyCreated(**out.model_dump(), key=material.full_key)


@router.get("", response_model=Page[ApiKeyOut])
async def list_keys(
    caller: Caller,
    session: Session,
    paging: Paging,
    user_id: Id | None = Query(default=None, description="Admins: only this user's keys."),
    include_revoked: bool = False,
) -> Page[ApiKeyOut]:
    owner = user_id if caller.is_admin else caller.user_id
    rows, total = await api_keys_db.list_page(
        session,
        user_id=owner,
        offset=paging.offset,
        limit=paging.per_page,
        include_revoked=include_revoked,
    )
    return paging.page_of([ApiKeyOut.model_validate(k) for k in rows], total)


@router.get("/{key_id}", response_model=ApiKeyOut)
async def get_key(key_id: Id, caller: Caller, session: Session) -> ApiKey:
    return await _load_visible(session, caller, key_id)


@router.patch("/{key_id}", response_model=ApiKeyOut)
async def set_limits(
    key_id: Id, body: ApiKeyLimits, admin: Admin, session: Session, state: State
) -> ApiKey:
    """Admins set a key's rate limits and token quota (null removes a limit); gateways
    apply them within a second."""
    key = await _load_visible(session, admin, key_id)
    for field, value in body.model_dump(exclude_unset=True).items():
        if field == "quota_period" and value is None:
            continue
        setattr(key, field, value)
    await key_changes.record_key(session, state, key.access_key)
    await session.commit()
    state.changes.notify()
    return key


@router.delete("/{key_id}", status_code=204)
async def revoke_key(key_id: Id, caller: Caller, session: Session, state: State) -> Response:
    """Revoke a key; gateways refuse it within a second."""
    key = await _load_visible(session, caller, key_id)
    api_keys_db.revoke(key, datetime.fromtimestamp(state.clock.now(), UTC))
    await key_changes.record_key(session, state, key.access_key)
    await session.commit()
    state.changes.notify()
    return Response(status_code=204)
