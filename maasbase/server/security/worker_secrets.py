"""The secrets that guard a worker's own HTTP API.

Two per worker, each for one purpose, so that holding one grants nothing the other
guards:

- the **API secret**, presented by the control plane when it reads a worker's hardware
  or an instance's logs;
- the **data-plane secret**, presented by gateways when they send inference requests
  through the worker's data-plane proxy to the engines it runs.

Both are keyed with the "worker-api" key derived from the secret key (``derived_keys``)
and bound to the worker's id and current credential, under a distinct purpose label: any
server replica can compute them, nothing extra is stored, a database dump alone does not
yield them, and both change whenever the worker's credential is re-issued.
"""

from __future__ import annotations

import hashlib
import hmac


def _derive(worker_key: str, purpose: str, worker_id: int, credential_access: str) -> str:
    message = f"{purpose}:{worker_id}:{credential_access}".encode()
    return hmac.new(worker_key.encode(), message, hashlib.sha256).hexdigest()


def worker_api_secret(worker_key: str, worker_id: int, credential_access: str) -> str:
    return _derive(worker_key, "worker-api", worker_id, credential_access)


def data_plane_secret(worker_key: str, worker_id: int, credential_access: str) -> str:
    return _derive(worker_key, "data-plane", worker_id, credential_access)
