"""Login and logout."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime

from fastapi import APIRouter, Request, Response

from maasbase.common.errors import TooManyRequests, Unauthenticated
from maasbase.server import authn
from maasbase.server.api.deps import Session, State
from maasbase.server.api.openapi import error_responses
from maasbase.server.db import revoked_sessions
from maasbase.server.db import users as users_db
from maasbase.server.db.tables import User
from maasbase.server.schemas.auth import LoginRequest, TokenResponse
from maasbase.server.security import passwords, tokens
from maasbase.server.state import ServerState

router = APIRouter(prefix="/api/v1/auth", tags=["auth"])


def issue_session(state: ServerState, user: User, response: Response) -> TokenResponse:
    """Sign an access token for ``user`` and set it as the UI session cookie."""
    ttl = state.settings.access_token_ttl_seconds
    token = tokens.issue(
        state.jwt_secret,
        user_id=user.id,
        account=tokens.account_tag(user.username, user.created_at),
        token_version=user.token_version,
        now=state.clock.now(),
        ttl=ttl,
    )
    response.set_cookie(
        authn.SESSION_COOKIE,
        token,
        max_age=ttl,
        httponly=True,
        samesite="strict",
        secure=state.settings.secure_cookies,
        path="/",
    )
    return TokenResponse(access_token=token, expires_in=ttl)


@router.post("/login", response_model=TokenResponse, responses=error_responses(401, 429))
async def login(
    body: LoginRequest, request: Request, response: Response, state: State, session: Session
) -> TokenResponse:
    client = request.client.host if request.client else "unknown"
    now = state.clock.now()
    wait = state.throttle.check(body.username, client, now)
    if wait > 0:
        raise TooManyRequests(
            f"too many failed logins for {body.username!r}; try again in {round(wait)} s",
            retry_after=wait,
        )
    user = await users_db.get_by_username(session, body.username)
    valid = await passwords.verify_password(user.password_hash if user else None, body.password)
    if user is None or not valid:
        state.throttle.record_failure(body.username, client, now)
        raise Unauthenticated("wrong username or password")
    if not user.is_active:
        raise Unauthenticated(f"user {user.username!r} is deactivated; ask an admin")
    state.throttle.record_success(body.username, client)
    return issue_session(state, user, response)


@router.post("/logout", status_code=204)
async def logout(request: Request, response: Response, state: State, session: Session) -> Response:
    """End the presented session (bearer access token or session cookie) on the server,
    so the token stops working at once, and clear the cookie. Nothing to end (no token,
    an API key, an expired or unknown token) still answers 204."""
    now = state.clock.now()
    presented = [request.cookies.get(authn.SESSION_COOKIE)]
    with contextlib.suppress(Unauthenticated):
        presented.append(authn.bearer_token(request.headers.get("authorization")))
    for token in presented:
        if not token or not tokens.looks_like_jwt(token):
            continue
        try:
            claims = tokens.verify(state.jwt_secret, token, now=now)
        except tokens.InvalidToken:
            continue
        await revoked_sessions.revoke(
            session,
            claims.jti,
            expires_at=datetime.fromtimestamp(claims.expires_at, UTC),
            now=datetime.fromtimestamp(now, UTC),
        )
    await session.commit()
    response.delete_cookie(authn.SESSION_COOKIE, path="/")
    response.status_code = 204
    return response
