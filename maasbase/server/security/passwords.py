"""Password hashing with Argon2id (argon2-cffi defaults, RFC 9106 low-memory profile).

Hashing costs a few hundred milliseconds of CPU on purpose, so it runs in a worker
thread: a login must never stall the event loop that serves everyone else.
"""

from __future__ import annotations

import asyncio
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from maasbase.common.errors import InvalidRequest

MIN_PASSWORD_LENGTH = 8


class _Hashers:
    """Holds the hasher; tests may swap in a cheaper Argon2 profile."""

    hasher = PasswordHasher()
    dummy_hash: str | None = None


def use_hasher(hasher: PasswordHasher) -> None:
    _Hashers.hasher = hasher
    _Hashers.dummy_hash = None


def check_strength(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidRequest(f"password must be at least {MIN_PASSWORD_LENGTH} characters long")
    if password.strip() != password:
        raise InvalidRequest("password must not start or end with whitespace")


def _verify(password_hash: str | None, password: str) -> bool:
    if password_hash is None:
        # Unknown user: verify against a throwaway hash so both paths take as long.
        if _Hashers.dummy_hash is None:
            _Hashers.dummy_hash = _Hashers.hasher.hash(secrets.token_urlsafe(16))
        password_hash = _Hashers.dummy_hash
        known = False
    else:
        known = True
    try:
        return _Hashers.hasher.verify(password_hash, password) and known
    except (VerificationError, InvalidHashError):
        return False


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(_Hashers.hasher.hash, password)


async def verify_password(password_hash: str | None, password: str) -> bool:
    return await asyncio.to_thread(_verify, password_hash, password)


def generate_password() -> str:
    return secrets.token_urlsafe(15)
