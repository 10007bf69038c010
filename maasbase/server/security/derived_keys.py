"""Secrets derived from the secret key, one per purpose, never stored.

The session-signing secret, the secret the control plane presents to workers and any
other keyed secret come from the first (primary) key of the secret key source
(``<data-dir>/secret_key`` or ``MAAS_SECRET_KEY``) through HKDF-SHA256, with a distinct
``info`` label per purpose. So a database dump alone cannot forge a session or call a
worker, every server replica with the same key derives the same values, and one purpose's
secret says nothing about another's.

Rotating the secret key (putting a new key first) changes every derived secret: sessions
end (users log in again) and each worker receives the new worker API secret when it next
registers (every worker start does). Older keys after the first still decrypt stored values.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from maasbase.server.security.secret_box import SecretBox

SESSION_SIGNING = "session-signing"
WORKER_API = "worker-api"
MODEL_ENV_DIGEST = "model-env-digest"

_SALT = b"maas-base derived keys v1"
_LENGTH = 32


def derive(box_or_key: SecretBox | str, purpose: str) -> str:
    """The secret for ``purpose`` (64 hex characters), from the primary key of a
    :class:`SecretBox` or of a key source string (Fernet keys; of several, the first counts)."""
    if not purpose:
        raise ValueError("a derived key needs a purpose label")
    box = box_or_key
    if not isinstance(box, SecretBox):
        box = SecretBox(box, source="the key given to derive")
    hkdf = HKDF(
        algorithm=hashes.SHA256(),
        length=_LENGTH,
        salt=_SALT,
        info=f"maas-base/{purpose}".encode(),
    )
    return hkdf.derive(box.primary_key).hex()
