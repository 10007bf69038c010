"""Signed access tokens (JWT, HS256) for logged-in users, also used as the session cookie.

Each token carries a random id (``jti``) so that logging out can end that one session
(``revoked_sessions``) before it expires, and names its account beyond the user's id
(``acc``: username and creation time), so a token never passes to another account that
later gets the same id (SQLite hands out the largest deleted id again).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime

import jwt

ALGORITHM = "HS256"
ISSUER = "maas-base"


@dataclass(frozen=True)
class TokenClaims:
    user_id: int
    token_version: int
    expires_at: float
    jti: str
    account: str


class InvalidToken(Exception):
    pass


def account_tag(username: str, created_at: datetime) -> str:
    """What tells one account from another that later reuses its id."""
    return f"{username}@{int(created_at.timestamp())}"


def issue(
    secret: str, *, user_id: int, account: str, token_version: int, now: float, ttl: int
) -> str:
    payload = {
        "acc": account,
        "sub": str(user_id),
        "ver": token_version,
        "iat": int(now),
        "exp": int(now) + ttl,
        "iss": ISSUER,
        "jti": secrets.token_urlsafe(16),
    }
    return jwt.encode(payload, secret, algorithm=ALGORITHM)


def verify(secret: str, token: str, *, now: float) -> TokenClaims:
    try:
        payload = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            issuer=ISSUER,
            options={
                "require": ["sub", "exp", "ver", "jti", "acc"],
                # Time is checked below against the injected clock.
                "verify_exp": False,
                "verify_iat": False,
                "verify_nbf": False,
            },
        )
        claims = TokenClaims(
            user_id=int(payload["sub"]),
            token_version=int(payload["ver"]),
            expires_at=float(payload["exp"]),
            jti=str(payload["jti"]),
            account=str(payload["acc"]),
        )
    except (jwt.PyJWTError, ValueError, TypeError) as exc:
        raise InvalidToken("invalid access token") from exc
    if claims.expires_at <= now:
        raise InvalidToken("access token expired; log in again")
    return claims


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2
