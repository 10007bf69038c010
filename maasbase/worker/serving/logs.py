"""Instance log files: tail and follow."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

MAX_TAIL_BYTES = 4 * 1024 * 1024


def tail(path: Path, lines: int) -> str:
    """The last ``lines`` lines of ``path`` ('' when it does not exist)."""
    if lines <= 0 or not path.exists():
        return ""
    with path.open("rb") as handle:
        size = handle.seek(0, os.SEEK_END)
        block = min(size, MAX_TAIL_BYTES)
        handle.seek(size - block)
        data = handle.read(block)
    text = data.decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _read_from(path: Path, position: int) -> tuple[str, int]:
    """Text written after ``position`` and the new position (0 after a truncation)."""
    size = _size(path)
    if size < position:
        position = 0
    if size == position:
        return "", position
    with path.open("rb") as handle:
        handle.seek(position)
        chunk = handle.read(size - position)
    return chunk.decode("utf-8", errors="replace"), size


async def follow(path: Path, *, start_lines: int, poll: float = 0.25) -> AsyncIterator[str]:
    """The last ``start_lines`` lines, then new text as it is written (until cancelled)."""
    initial = await asyncio.to_thread(tail, path, start_lines)
    if initial:
        yield initial + "\n"
    position = await asyncio.to_thread(_size, path)
    while True:
        await asyncio.sleep(poll)
        text, position = await asyncio.to_thread(_read_from, path, position)
        if text:
            yield text
