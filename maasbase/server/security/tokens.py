"""Signed access tokens (JWT, HS256) for logged-in users, also used as the session cookie.

Each token carries a random id (``jti``) so that logging out can end that one session
(``revoked_sessions``) before it expires.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import jwt

ALGORITHM = "HS256"
ISSUER = "maas-base"


@dataclass(frozen=True)
class TokenClaims:
    user_id: int
    token_version: int
    expires_at: float
    jti: str


class InvalidToken(Exception):
    pass


def issue(secret: str, *, user_id: int, token_version: int, now: float, ttl: int) -> str:
    payload = {
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
                "require": ["sub", "exp", "ver", "jti"],
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
        )
    except (jwt.PyJWTError, ValueError, TypeError) as exc:
        raise InvalidToken("invalid access token") from exc
    if claims.expires_at <= now:
        raise InvalidToken("access token expired; log in again")
    return claims


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2
