"""Key material: API keys ``mb_<access key>_<secret>``, worker credentials ``mbw_...``,
gateway credentials ``mbg_...``.

The access key (public, indexed) finds the row; only a SHA-256 of the secret is
stored. Keys carry 190 bits of randomness, so a fast hash is the right tool (a slow
password hash would add milliseconds to every gateway request without adding safety).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

PREFIX = "mb"
WORKER_PREFIX = "mbw"
GATEWAY_PREFIX = "mbg"
ACCESS_KEY_BYTES = 8
SECRET_BYTES = 24


@dataclass(frozen=True)
class KeyMaterial:
    access_key: str
    secret: str
    prefix: str = PREFIX

    @property
    def full_key(self) -> str:
        return f"{self.prefix}_{self.access_key}_{self.secret}"


def generate(prefix: str = PREFIX) -> KeyMaterial:
    return KeyMaterial(
        access_key=secrets.token_hex(ACCESS_KEY_BYTES),
        secret=secrets.token_urlsafe(SECRET_BYTES),
        prefix=prefix,
    )


def parse(key: str, prefix: str = PREFIX) -> KeyMaterial | None:
    """Split a presented key; ``None`` when it is not shaped like one of ours."""
    found, sep, rest = key.partition("_")
    if found != prefix or not sep:
        return None
    access_key, sep, secret = rest.partition("_")
    if not sep or len(access_key) != ACCESS_KEY_BYTES * 2 or not secret:
        return None
    return KeyMaterial(access_key=access_key, secret=secret, prefix=prefix)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def secret_matches(secret: str, secret_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(secret), secret_hash)


def looks_like_api_key(token: str) -> bool:
    return token.startswith(PREFIX + "_")


def looks_like_worker_credential(token: str) -> bool:
    return token.startswith(WORKER_PREFIX + "_")


def looks_like_gateway_credential(token: str) -> bool:
    return token.startswith(GATEWAY_PREFIX + "_")
