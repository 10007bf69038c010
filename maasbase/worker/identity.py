"""The worker's identity on disk: who it is on which server, and its credentials (0600)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from pydantic import BaseModel, ValidationError

logger = logging.getLogger(__name__)

IDENTITY_FILE = "identity.json"


class WorkerIdentity(BaseModel):
    server_url: str
    worker_id: int
    name: str
    credential: str
    api_secret: str
    data_plane_secret: str | None = None


def identity_path(worker_dir: Path) -> Path:
    return worker_dir / IDENTITY_FILE


def load(worker_dir: Path) -> WorkerIdentity | None:
    path = identity_path(worker_dir)
    if not path.exists():
        return None
    try:
        return WorkerIdentity.model_validate(json.loads(path.read_text()))
    except (ValueError, ValidationError):
        logger.warning("ignoring unreadable worker identity %s; registering anew", path)
        return None


def save(worker_dir: Path, identity: WorkerIdentity) -> None:
    worker_dir.mkdir(parents=True, exist_ok=True)
    path = identity_path(worker_dir)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(identity.model_dump_json(indent=2))
    os.replace(tmp, path)
