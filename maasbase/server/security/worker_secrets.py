"""The secret the control plane presents when it calls a worker's own API.

Keyed with the "worker-api" secret derived from the secret key (``derived_keys``) and
bound to the worker's current credential, so any server replica can compute it, nothing
extra is stored, a database dump alone does not yield it, and it changes whenever the
worker's credential is re-issued.
"""

from __future__ import annotations

import hashlib
import hmac


def worker_api_secret(worker_key: str, worker_id: int, credential_access: str) -> str:
    message = f"worker-api:{worker_id}:{credential_access}".encode()
    return hmac.new(worker_key.encode(), message, hashlib.sha256).hexdigest()
