"""Encryption at rest for secrets the server must read back, such as provider API keys.

Hashing will not do for these: they are sent upstream. Fernet (AES-CBC with an
HMAC-SHA256 tag, from ``cryptography``) encrypts them with a key that lives apart from
the database (the ``secret_key`` setting or ``<data-dir>/secret_key``), so a database
dump alone reveals nothing. Stored values carry the prefix ``fernet:``; a value without
it is plain text written by an older version.

Rotation: the key source may hold several keys, newest first (one per line in the file,
or separated by commas in the setting). New values are encrypted with the first; any of
them decrypts; at start the server re-encrypts with the first whatever it can read only
with an older one, after which the older keys can be removed.
"""

from __future__ import annotations

import base64
import re

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from maasbase.common.errors import ConfigurationError, SecretKeyMismatch

PREFIX = "fernet:"


def generate_key() -> str:
    return Fernet.generate_key().decode()


def is_encrypted(stored: str) -> bool:
    return stored.startswith(PREFIX)


def split_keys(keys: str) -> list[str]:
    """The keys in a key source, newest first: separated by newlines or commas."""
    return [key for key in re.split(r"[\s,]+", keys) if key]


class SecretBox:
    """Encrypts with the first of its keys and decrypts with any; ``source`` names where
    the keys came from, for error messages."""

    def __init__(self, keys: str, *, source: str) -> None:
        self.source = source
        parts = split_keys(keys)
        if not parts:
            raise ConfigurationError(f"{source} holds no secret key; {_HOW_TO_GENERATE}")
        fernets: list[Fernet] = []
        for number, key in enumerate(parts, 1):
            try:
                fernets.append(Fernet(key.encode()))
            except ValueError:
                which = "the secret key" if len(parts) == 1 else f"secret key {number}"
                raise ConfigurationError(
                    f"{which} in {source} is not a Fernet key (32 url-safe base64 bytes); "
                    f"{_HOW_TO_GENERATE}"
                ) from None
        self._primary = fernets[0]
        self._primary_key = _key_bytes(parts[0])
        self._fernet = MultiFernet(fernets)
        self.key_count = len(fernets)

    @property
    def primary_key(self) -> bytes:
        """The raw first key: the input of the derived secrets (``derived_keys``)."""
        return self._primary_key

    def encrypt(self, plain: str) -> str:
        return PREFIX + self._primary.encrypt(plain.encode()).decode()

    def is_current(self, stored: str) -> bool:
        """Whether ``stored`` is encrypted with the first key (plain text is not)."""
        if not is_encrypted(stored):
            return False
        try:
            self._primary.decrypt(stored.removeprefix(PREFIX))
        except (InvalidToken, ValueError):
            return False
        return True

    def reencrypt(self, stored: str) -> str:
        """``stored`` (plain, or encrypted with any of the keys) encrypted with the first
        key; ``SecretKeyMismatch`` when none of the keys reads it."""
        return self.encrypt(self.decrypt(stored))

    def decrypt(self, stored: str) -> str:
        """The plain value; a value without the prefix is returned as it is (plain text
        from an older version)."""
        if not is_encrypted(stored):
            return stored
        try:
            return self._fernet.decrypt(stored.removeprefix(PREFIX)).decode()
        except (InvalidToken, ValueError):  # ValueError: non-ASCII, so damaged
            raise SecretKeyMismatch(
                "the secret key changed since this value was stored (or the value is "
                f"damaged): {self.source} holds another key; put the previous key back "
                "(after the new one, to rotate), or store the value again"
            ) from None


def _key_bytes(key: str) -> bytes:
    return base64.urlsafe_b64decode(key.encode())


_HOW_TO_GENERATE = (
    "generate one with: python -c 'from cryptography.fernet import Fernet; "
    "print(Fernet.generate_key().decode())'"
)
