"""One download per file: an asyncio lock per key in the process, ``flock`` across processes."""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

from .errors import DownloadCancelled

LOCK_POLL_SECONDS = 0.1


class KeyedLocks:
    """An ``asyncio.Lock`` per key, forgotten when no task holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    def __len__(self) -> int:
        return len(self._locks)


def lock_path(folder: Path, key: str) -> Path:
    """The lock file of ``key`` in ``folder`` (keys may hold any characters)."""
    return folder / f"{hashlib.sha256(key.encode()).hexdigest()[:40]}.lock"


@contextmanager
def file_lock(path: Path, cancel: threading.Event) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path``; blocks (in a thread) until it is free.

    Polls so that a cancelled caller stops waiting. ``flock`` locks belong to the open
    file, so two threads of one process exclude each other as two processes do.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+b") as handle:
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if cancel.wait(LOCK_POLL_SECONDS):
                    raise DownloadCancelled from None
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
