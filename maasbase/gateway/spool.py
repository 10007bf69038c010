"""A durable usage spool: usage batches on disk until the control plane has taken them.

A standalone gateway writes each batch here before sending it and removes it once the
server answered, so usage survives a restart (or a crash) of the gateway; at start, a
leftover spool is sent first. One file per batch (``<seq>-<records>.json``, written to a
temporary name and renamed, so a file is whole or absent) in a slot folder that one
process holds with a lock; a process also adopts the files of slots no process holds
(a gateway that ran with more ``--workers`` before). The methods do blocking file I/O:
call them from a thread (``asyncio.to_thread``), as ``UsageMeter`` does. Past
``max_bytes`` the oldest batches are dropped, with an error in the log.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import orjson

from maasbase.common.routing import Usage

logger = logging.getLogger("maasbase.gateway.spool")

DEFAULT_MAX_BYTES = 256 * 1024 * 1024
MAX_SLOTS = 256
FIELDS = 12  # the fields of ``Usage``, in order


@dataclass(frozen=True)
class SpooledBatch:
    path: Path
    records: int
    size: int


def _row(u: Usage) -> list[object]:
    return [u.time, u.api_key_id, u.user_id, u.model, u.endpoint, u.upstream_id, u.status,
            u.prompt_tokens, u.completion_tokens, u.latency_ms, u.ttft_ms, u.stream]  # fmt: skip


def encode(usages: list[Usage]) -> bytes:
    return orjson.dumps([_row(u) for u in usages])


def decode(data: bytes) -> list[Usage]:
    """The records of a spool file; ``ValueError`` when it is not one."""
    rows = orjson.loads(data)
    if not isinstance(rows, list) or not all(
        isinstance(row, list) and len(row) == FIELDS for row in rows
    ):
        raise ValueError("not a usage spool file")
    try:
        usages = [Usage(*row) for row in rows]
        for usage in usages:
            usage.fit()
    except TypeError as exc:
        raise ValueError(f"not a usage spool file ({exc})") from None
    return usages


class UsageSpool:
    def __init__(self, folder: Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        self.dropped = 0
        self._lock = threading.Lock()
        self._batches: list[SpooledBatch] = []
        self._next = 0
        self._slot: Path | None = None
        self._lock_file: IO[bytes] | None = None

    # lifecycle
    @property
    def opened(self) -> bool:
        return self._slot is not None

    def open(self) -> None:
        """Take a free slot, adopt the files of slots no process holds, list the batches."""
        if self._slot is not None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        for number in range(MAX_SLOTS):
            handle = self._try_lock(number)
            if handle is not None:
                self._lock_file, self._slot = handle, self.folder / str(number)
                break
        else:
            raise OSError(f"all {MAX_SLOTS} usage spool slots in {self.folder} are in use")
        self._slot.mkdir(exist_ok=True)
        for partial in self._slot.glob("*.tmp"):  # a write cut short: never acknowledged
            partial.unlink()
        found = sorted(self._slot.glob("*.json"))
        self._next = max((_sequence(path) for path in found), default=-1) + 1
        for number in range(MAX_SLOTS):
            other = self.folder / str(number)
            if other != self._slot and other.is_dir():
                found += self._adopt(number, other)
        self._batches = [_batch(path) for path in found]
        if self._batches:
            logger.info("usage spool %s: %d records left from before, sending them first",
                        self._slot, sum(b.records for b in self._batches))  # fmt: skip

    def close(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()  # releases the lock
        self._lock_file = self._slot = None

    def _try_lock(self, number: int) -> IO[bytes] | None:
        handle = (self.folder / f"{number}.lock").open("ab")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return None
        return handle

    def _adopt(self, number: int, other: Path) -> list[Path]:
        handle = self._try_lock(number)
        if handle is None:
            return []  # another process holds it and sends its own batches
        assert self._slot is not None
        adopted = []
        try:
            for path in sorted(other.glob("*.json")):
                target = self._slot / self._name(_records(path))
                path.rename(target)
                adopted.append(target)
        finally:
            handle.close()
        return adopted

    def _name(self, records: int) -> str:
        number, self._next = self._next, self._next + 1
        return f"{number:012d}-{records}.json"

    # batches
    @property
    def pending(self) -> int:
        """Records waiting in the spool."""
        with self._lock:
            return sum(batch.records for batch in self._batches)

    def append(self, usages: list[Usage]) -> None:
        """Write a batch (whole or not at all); drop the oldest past ``max_bytes``."""
        assert self._slot is not None, "open() the spool first"
        data = encode(usages)
        with self._lock:
            name = self._name(len(usages))
        path = self._slot / name
        partial = path.with_suffix(".tmp")
        partial.write_bytes(data)
        partial.rename(path)
        with self._lock:
            self._batches.append(SpooledBatch(path, len(usages), len(data)))
            self._enforce_cap()

    def _enforce_cap(self) -> None:
        total = sum(batch.size for batch in self._batches)
        dropped = 0
        while total > self.max_bytes and len(self._batches) > 1:
            oldest = self._batches.pop(0)
            total -= oldest.size
            dropped += oldest.records
            oldest.path.unlink(missing_ok=True)
        if dropped:
            self.dropped += dropped
            logger.error(
                "usage spool %s is over its cap of %d MiB: dropped the %d oldest records "
                "(the control plane has been unreachable or refusing usage; check it)",
                self._slot, self.max_bytes // (1024 * 1024), dropped,
            )  # fmt: skip

    def oldest(self) -> SpooledBatch | None:
        with self._lock:
            return self._batches[0] if self._batches else None

    def read(self, batch: SpooledBatch) -> list[Usage]:
        return decode(batch.path.read_bytes())

    def remove(self, batch: SpooledBatch) -> None:
        with self._lock:
            if batch in self._batches:
                self._batches.remove(batch)
        batch.path.unlink(missing_ok=True)


def _sequence(path: Path) -> int:
    try:
        return int(path.stem.split("-", 1)[0])
    except ValueError:
        return -1


def _records(path: Path) -> int:
    try:
        return int(path.stem.split("-", 1)[1])
    except (IndexError, ValueError):
        return 0


def _batch(path: Path) -> SpooledBatch:
    return SpooledBatch(path, _records(path), os.stat(path).st_size)
