"""Users: the caller's own account, and admin-only management of all accounts."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from maasbase.common.bounds import Id, Text
from maasbase.common.errors import Conflict, Forbidden, InvalidRequest, NotFound
from maasbase.server import key_changes
from maasbase.server.api.auth import issue_session
from maasbase.server.api.deps import Admin, Caller, Paging, Session, State
from maasbase.server.api.openapi import error_responses
from maasbase.server.db import users as users_db
from maasbase.server.db.tables import User
from maasbase.server.schemas.auth import TokenResponse
from maasbase.server.schemas.common import Page
from maasbase.server.schemas.users import (
    LIMIT_FIELDS,
    PasswordChange,
    UserCreate,
    UserOut,
    UserUpdate,
)
from maasbase.server.security import passwords

router = APIRouter(prefix="/api/v1/users", tags=["users"])


async def _load(session: Session, user_id: int) -> User:
    user = await users_db.get(session, user_id)
    if user is None:
        raise NotFound(f"user {user_id} does not exist")
    return user


async def _keep_an_admin(session: Session, user_id: int) -> None:
    """Refuse when ``user_id`` is the last active admin. The admin rows stay locked until
    the caller commits, so two requests at once cannot each remove one of two admins."""
    if await users_db.lock_active_admins(session) == [user_id]:
        raise Conflict("this is the last active admin; make another user admin first")


@router.get("/me", response_model=UserOut)
async def me(caller: Caller, session: Session) -> User:
    if caller.user_id is None:
        raise Forbidden("these credentials do not belong to a user")
    return await _load(session, caller.user_id)


@router.put("/me/password", response_model=TokenResponse)
async def change_password(
    body: PasswordChange, caller: Caller, session: Session, state: State, response: Response
) -> TokenResponse:
    if caller.user_id is None:
        raise Forbidden("these credentials do not belong to a user")
    user = await _load(session, caller.user_id)
    if not await passwords.verify_password(user.password_hash, body.current_password):
        raise InvalidRequest("current_password is wrong")
    passwords.check_strength(body.new_password)
    users_db.set_password(user, await passwords.hash_password(body.new_password))
    await key_changes.record_user(session, state, user.id)
    await session.commit()
    state.changes.notify()
    return issue_session(state, user, response)


@router.get("", response_model=Page[UserOut])
async def list_users(
    _admin: Admin,
    session: Session,
    paging: Paging,
    search: Annotated[Text | None, Query(max_length=64)] = None,
) -> Page[UserOut]:
    rows, total = await users_db.list_page(
        session, offset=paging.offset, limit=paging.per_page, search=search
    )
    return paging.page_of([UserOut.model_validate(u) for u in rows], total)


@router.post("", response_model=UserOut, status_code=201, responses=error_responses(409))
async def create_user(body: UserCreate, _admin: Admin, session: Session) -> User:
    passwords.check_strength(body.password)
    if await users_db.get_by_username(session, body.username) is not None:
        raise Conflict(f"user {body.username!r} already exists; pick another username")
    user = await users_db.create(
        session,
        username=body.username,
        password_hash=await passwords.hash_password(body.password),
        is_admin=body.is_admin,
        full_name=body.full_name,
    )
    await session.commit()
    return user


@router.get("/{user_id}", response_model=UserOut)
async def get_user(user_id: Id, _admin: Admin, session: Session) -> User:
    return await _load(session, user_id)


@router.patch("/{user_id}", response_model=UserOut, responses=error_responses(409))
async def update_user(
    user_id: Id, body: UserUpdate, admin: Admin, session: Session, state: State
) -> User:
    """Admin changes to a user, limits shared by all their keys included; gateways apply
    deactivation and limits within a second."""
    user = await _load(session, user_id)
    if body.is_admin is False or body.is_active is False:
        await _keep_an_admin(session, user.id)
    if body.full_name is not None:
        user.full_name = body.full_name
    if body.is_admin is not None:
        user.is_admin = body.is_admin
    if body.is_active is not None:
        user.is_active = body.is_active
    if body.password is not None:
        passwords.check_strength(body.password)
        users_db.set_password(user, await passwords.hash_password(body.password))
    limits = body.model_dump(include=set(LIMIT_FIELDS), exclude_unset=True)
    for field, value in limits.items():
        if not (field == "quota_period" and value is None):
            setattr(user, field, value)
    changed = bool(limits) or body.is_active is not None or body.password is not None
    if changed:
        await key_changes.record_user(session, state, user.id)
    await session.commit()
    if changed:
        state.changes.notify()
    return user


@router.delete("/{user_id}", status_code=204, responses=error_responses(409))
async def delete_user(user_id: Id, admin: Admin, session: Session, state: State) -> Response:
    user = await _load(session, user_id)
    if user.id == admin.user_id:
        raise Conflict("you cannot delete your own account")
    await _keep_an_admin(session, user.id)
    await key_changes.record_user(session, state, user.id)
    await users_db.delete(session, user)
    await session.commit()
    state.changes.notify()
    return Response(status_code=204)
