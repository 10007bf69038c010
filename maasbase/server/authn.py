"""Authentication: turn presented credentials into a Principal, or refuse with a reason."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import NoReturn

from sqlalchemy.ext.asyncio import AsyncSession

from maasbase.common.auth import Principal, PrincipalKind, Scope
from maasbase.common.errors import Forbidden, Unauthenticated
from maasbase.server.db import api_keys as api_keys_db
from maasbase.server.db import gateways as gateways_db
from maasbase.server.db import revoked_sessions, system_settings
from maasbase.server.db import users as users_db
from maasbase.server.db import workers as workers_db
from maasbase.server.db.tables import User
from maasbase.server.security import api_keys as key_material
from maasbase.server.security import tokens

SESSION_COOKIE = "maas_session"
# A gateway's ``last_seen_at`` is written at most this often (seconds).
GATEWAY_SEEN_RESOLUTION = 30.0


async def from_api_key(session: AsyncSession, presented: str, *, now: datetime) -> Principal:
    material = key_material.parse(presented)
    if material is None:
        raise Unauthenticated("malformed API key")
    key = await api_keys_db.get_by_access_key(session, material.access_key)
    if key is None or not key_material.secret_matches(material.secret, key.secret_hash):
        raise Unauthenticated("invalid API key")
    if key.revoked_at is not None:
        raise Unauthenticated(
            f"this API key was revoked at {key.revoked_at.astimezone(UTC).isoformat()}; "
            "create a new one"
        )
    if key.expires_at is not None and key.expires_at <= now:
        raise Unauthenticated(
            f"this API key expired at {key.expires_at.astimezone(UTC).isoformat()}; "
            "create a new one"
        )
    user = await users_db.get(session, key.user_id)
    _check_active(user)
    assert user is not None
    return Principal(
        kind=PrincipalKind.API_KEY,
        user_id=user.id,
        name=user.username,
        is_admin=user.is_admin,
        scope=Scope(key.scope),
        allowed_models=tuple(key.allowed_models) if key.allowed_models is not None else None,
        api_key_id=key.id,
    )


async def from_access_token(
    session: AsyncSession, token: str, *, secret: str, now: float
) -> Principal:
    try:
        claims = tokens.verify(secret, token, now=now)
    except tokens.InvalidToken as exc:
        raise Unauthenticated(str(exc)) from exc
    user = await users_db.get(session, claims.user_id)
    if user is not None and claims.account != tokens.account_tag(user.username, user.created_at):
        user = None  # the token's account was deleted; this is another one with its id
    _check_active(user)
    assert user is not None
    if claims.token_version != user.token_version:
        raise Unauthenticated("session ended because the password changed; log in again")
    if await revoked_sessions.is_revoked(session, claims.jti):
        raise Unauthenticated("session ended (logged out); log in again")
    return user_principal(user)


async def from_worker_credential(session: AsyncSession, presented: str) -> Principal:
    material = key_material.parse(presented, prefix=key_material.WORKER_PREFIX)
    if material is None:
        raise Unauthenticated("malformed worker credential")
    worker = await workers_db.get_by_credential_access(session, material.access_key)
    if worker is None or not key_material.secret_matches(material.secret, worker.credential_hash):
        raise Unauthenticated(
            "worker credential not recognised (the worker may have been deleted); "
            "register again with the registration token"
        )
    return Principal(
        kind=PrincipalKind.WORKER,
        user_id=None,
        name=worker.name,
        is_admin=False,
        scope=Scope.INFERENCE,
        worker_id=worker.id,
    )


async def from_gateway_credential(
    session: AsyncSession, presented: str, *, now: datetime
) -> Principal:
    material = key_material.parse(presented, prefix=key_material.GATEWAY_PREFIX)
    if material is None:
        raise Unauthenticated("malformed gateway credential")
    gateway = await gateways_db.get_by_credential_access(session, material.access_key)
    if gateway is None or not key_material.secret_matches(material.secret, gateway.credential_hash):
        raise Unauthenticated(
            "gateway credential not recognised (it may have been revoked); create a new one "
            "with POST /api/v1/gateways or start the gateway with the registration token"
        )
    seen = gateway.last_seen_at
    if seen is None or (now - seen).total_seconds() >= GATEWAY_SEEN_RESOLUTION:
        gateway.last_seen_at = now
    return Principal(
        kind=PrincipalKind.GATEWAY,
        user_id=None,
        name=gateway.name,
        is_admin=False,
        scope=Scope.INFERENCE,
        gateway_id=gateway.id,
    )


async def is_registration_token(session: AsyncSession, presented: str) -> bool:
    expected = await system_settings.get(session, system_settings.REGISTRATION_TOKEN_HASH)
    # Stored as a SHA-256 of the token, the same digest as credential secrets.
    return expected is not None and key_material.secret_matches(presented, expected)


async def refuse_other_bearer(session: AsyncSession, presented: str, *, needs: str) -> NoReturn:
    """A bearer that is none of our credentials: the registration token is refused by
    name (it only registers workers and gateways), anything else as unrecognised."""
    if await is_registration_token(session, presented):
        raise Forbidden(
            f"the registration token only registers workers and gateways; this route needs {needs}"
        )
    raise Unauthenticated(f"credential not recognised; this route needs {needs}")


def user_principal(user: User) -> Principal:
    return Principal(
        kind=PrincipalKind.USER,
        user_id=user.id,
        name=user.username,
        is_admin=user.is_admin,
        scope=Scope.ALL,
    )


def _check_active(user: User | None) -> None:
    if user is None:
        raise Unauthenticated("the user behind these credentials no longer exists")
    if not user.is_active:
        raise Unauthenticated(f"user {user.username!r} is deactivated; ask an admin")


def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise Unauthenticated("use 'Authorization: Bearer <API key or access token>'")
    return value.strip()
