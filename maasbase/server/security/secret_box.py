"""Encryption at rest for secrets the server must read back, such as provider API keys.

Hashing will not do for these: they are sent upstream. Fernet (AES-CBC with an
HMAC-SHA256 tag, from ``cryptography``) encrypts them with a key that lives apart from
the database (the ``secret_key`` setting or ``<data-dir>/secret_key``), so a database
dump alone reveals nothing. Stored values carry the prefix ``fernet:``; a value without
it is plain text written by an older version.
"""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken

from maasbase.common.errors import ConfigurationError, SecretKeyMismatch

PREFIX = "fernet:"


def generate_key() -> str:
    return Fernet.generate_key().decode()


def is_encrypted(stored: str) -> bool:
    return stored.startswith(PREFIX)


class SecretBox:
    """Encrypts and decrypts short strings with one key; ``source`` names where the key
    came from, for error messages."""

    def __init__(self, key: str, *, source: str) -> None:
        self.source = source
        try:
            self._fernet = Fernet(key.strip().encode())
        except ValueError:
            raise ConfigurationError(
                f"the secret key in {source} is not a Fernet key (32 url-safe base64 bytes); "
                "generate one with: python -c 'from cryptography.fernet import Fernet; "
                "print(Fernet.generate_key().decode())'"
            ) from None

    def encrypt(self, plain: str) -> str:
        return PREFIX + self._fernet.encrypt(plain.encode()).decode()

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
                f"damaged): {self.source} holds another key; restore the previous key, or "
                "store the value again"
            ) from None
