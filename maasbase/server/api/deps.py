"""Dependencies shared by routes: state, database session, caller, authorization."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Annotated, TypeVar

from fastapi import Depends, Query, Request, Security
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from maasbase.common.auth import Principal, PrincipalKind
from maasbase.common.errors import Forbidden, Unauthenticated
from maasbase.server import authn
from maasbase.server.schemas.common import MAX_PAGE, MAX_PER_PAGE, Page
from maasbase.server.security import api_keys as key_material
from maasbase.server.security import tokens
from maasbase.server.state import ServerState

T = TypeVar("T")


def get_state(request: Request) -> ServerState:
    state: ServerState = request.app.state.maas
    return state


State = Annotated[ServerState, Depends(get_state)]


async def get_session(state: State) -> AsyncIterator[AsyncSession]:
    async with state.sessions() as session:
        yield session


Session = Annotated[AsyncSession, Depends(get_session)]


# Declared for the OpenAPI schema (its security schemes); ``get_principal`` reads the
# header and the cookie itself.
BEARER = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="An API key (mb_...) or an access token from POST /api/v1/auth/login.",
)
SESSION_COOKIE = APIKeyCookie(
    name=authn.SESSION_COOKIE,
    auto_error=False,
    scheme_name="session",
    description="The session cookie that POST /api/v1/auth/login sets (the web UI).",
)


async def get_principal(
    request: Request,
    state: State,
    session: Session,
    _bearer: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)] = None,
    _cookie: Annotated[str | None, Security(SESSION_COOKIE)] = None,
) -> Principal:
    token = authn.bearer_token(request.headers.get("authorization"))
    if token is None:
        token = request.cookies.get(authn.SESSION_COOKIE)
        if not token:
            raise Unauthenticated(
                "authentication required: send 'Authorization: Bearer <API key>' "
                "or log in at POST /api/v1/auth/login"
            )
    now = state.clock.now()
    if key_material.looks_like_worker_credential(token):
        principal = await authn.from_worker_credential(session, token)
    elif key_material.looks_like_gateway_credential(token):
        principal = await authn.from_gateway_credential(
            session, token, now=datetime.fromtimestamp(now, UTC)
        )
    elif key_material.looks_like_api_key(token):
        principal = await authn.from_api_key(session, token, now=datetime.fromtimestamp(now, UTC))
    elif not tokens.looks_like_jwt(token):
        await authn.refuse_other_bearer(session, token, needs=credential_needed(request.url.path))
    else:
        principal = await authn.from_access_token(session, token, secret=state.jwt_secret, now=now)
    request.state.principal = principal
    # End the transaction (keeping a gateway's last-seen time) so the connection goes back
    # to the pool: long-running requests (watches, streams) must not hold one.
    if session.dirty:
        await session.commit()
    else:
        await session.rollback()
    return principal


def credential_needed(path: str) -> str:
    """What to authenticate with at ``path``, for refusals."""
    if path.startswith("/api/v1/gateway/"):
        return (
            "a gateway credential (mbg_...): create one with POST /api/v1/gateways or start "
            "the gateway with the registration token, which it exchanges for one"
        )
    if path.startswith(("/api/v1/workers/heartbeat", "/api/v1/workers/assignments",
                        "/api/v1/workers/instance-reports")):  # fmt: skip
        return "the worker credential (mbw_...) issued at registration"
    return "an API key (mb_...) or an access token from POST /api/v1/auth/login"


async def require_management(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
    if principal.kind in (PrincipalKind.WORKER, PrincipalKind.GATEWAY):
        raise Forbidden(
            f"{principal.kind} credentials may only call the {principal.kind} endpoints"
        )
    if not principal.scope.allows_management():
        raise Forbidden(
            f"this API key has scope '{principal.scope}'; the management API needs a key "
            "with scope 'management' or 'all'"
        )
    return principal


Caller = Annotated[Principal, Depends(require_management)]


async def require_admin(principal: Caller) -> Principal:
    if not principal.is_admin:
        raise Forbidden("this action needs an admin account")
    return principal


Admin = Annotated[Principal, Depends(require_admin)]


async def require_worker(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
    if principal.kind is not PrincipalKind.WORKER or principal.worker_id is None:
        raise Forbidden("this endpoint is for workers; authenticate with a worker credential")
    return principal


WorkerCaller = Annotated[Principal, Depends(require_worker)]


GATEWAY_CREDENTIAL = credential_needed("/api/v1/gateway/")


async def require_gateway(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
    if principal.kind is not PrincipalKind.GATEWAY:
        raise Forbidden(f"this endpoint is for gateways; authenticate with {GATEWAY_CREDENTIAL}")
    return principal


GatewayCaller = Annotated[Principal, Depends(require_gateway)]


class PageParams:
    def __init__(
        self,
        page: Annotated[int, Query(ge=1, le=MAX_PAGE, description="1-based page number")] = 1,
        per_page: Annotated[int, Query(ge=1, le=MAX_PER_PAGE, description="Items per page")] = 100,
    ) -> None:
        self.page = page
        self.per_page = per_page

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.per_page

    def page_of(self, items: Sequence[T], total: int) -> Page[T]:
        """The list response for one page of ``items`` out of ``total``."""
        return Page(items=list(items), total=total, page=self.page, per_page=self.per_page)


Paging = Annotated[PageParams, Depends()]
