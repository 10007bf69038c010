"""Free-space check before a download: pure arithmetic plus one ``disk_usage`` call."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from .errors import InsufficientDiskSpace

# Room left free beyond the files themselves (file system metadata, logs, other writers).
DEFAULT_MARGIN_BYTES = 256 * 1024**2


class Usage(NamedTuple):
    total: int
    used: int
    free: int


DiskUsage = Callable[[Path], Usage]


def disk_usage(path: Path) -> Usage:
    """Usage of the file system holding ``path`` (``shutil.disk_usage``)."""
    total, used, free = shutil.disk_usage(path)
    return Usage(total, used, free)


def format_bytes(count: int) -> str:
    """Human-readable binary size: ``512 B``, ``3.1 GiB``."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def check_free_space(
    needed: int, free: int, where: Path, *, margin: int = DEFAULT_MARGIN_BYTES
) -> None:
    """Raise ``InsufficientDiskSpace`` unless ``needed`` bytes plus ``margin`` fit in ``free``."""
    if needed <= 0 or needed + margin <= free:
        return
    wanted = needed + margin
    raise InsufficientDiskSpace(
        f"the model download needs {format_bytes(wanted)} in {where}, "
        f"{format_bytes(free)} free; free space or point --data-dir elsewhere",
        needed=wanted,
        free=free,
        where=str(where),
    )
