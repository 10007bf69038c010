"""What the worker started, on disk, so a restarted worker can adopt or clean up its
inference servers instead of leaking them."""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path

from pydantic import BaseModel, ValidationError

logger = logging.getLogger(__name__)


class RunRecord(BaseModel):
    instance_id: int
    restart_count: int
    assignment_key: str  # hash of the assignment it was started from
    pid: int
    create_time: float
    port: int
    container_id: str | None = None


class RecordStore:
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _path(self, instance_id: int) -> Path:
        return self.folder / f"{instance_id}.json"

    def save(self, record: RunRecord) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self._path(record.instance_id).with_suffix(".tmp")
        tmp.write_text(record.model_dump_json())
        os.replace(tmp, self._path(record.instance_id))

    def remove(self, instance_id: int) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(instance_id).unlink()

    def load_all(self) -> list[RunRecord]:
        if not self.folder.exists():
            return []
        records = []
        for path in sorted(self.folder.glob("*.json")):
            try:
                records.append(RunRecord.model_validate(json.loads(path.read_text())))
            except (ValueError, ValidationError):
                logger.warning("ignoring unreadable run record %s", path)
                path.unlink(missing_ok=True)
        return records
