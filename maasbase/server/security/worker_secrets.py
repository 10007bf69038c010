"""The secret the control plane presents when it calls a worker's own API.

Derived from the cluster signing secret and the worker's current credential, so any
server replica can compute it, nothing extra is stored, and it changes whenever the
worker's credential is re-issued.
"""

from __future__ import annotations

import hashlib
import hmac


def worker_api_secret(signing_secret: str, worker_id: int, credential_access: str) -> str:
    message = f"worker-api:{worker_id}:{credential_access}".encode()
    return hmac.new(signing_secret.encode(), message, hashlib.sha256).hexdigest()
