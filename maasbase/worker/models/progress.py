"""Download progress for people: a one-line summary and a rich progress bar."""

from __future__ import annotations

from types import TracebackType
from typing import Self

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from maasbase.common.instances import DownloadProgress

from .disk import format_bytes


def summarize(progress: DownloadProgress) -> str:
    """``3.1 GiB of 14.2 GiB (22%)``, or ``3.1 GiB`` when the total is unknown."""
    done = format_bytes(progress.bytes_done)
    percent = progress.percent
    if progress.bytes_total is None or percent is None:
        return done
    return f"{done} of {format_bytes(progress.bytes_total)} ({percent:.0f}%)"


class DownloadProgressBar:
    """A rich bar fed with ``DownloadProgress`` updates; pass ``bar.update`` as the callback.

    Use as a context manager: the bar shows between enter and exit.
    """

    def __init__(
        self, description: str, *, console: Console | None = None, transient: bool = False
    ) -> None:
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            DownloadColumn(binary_units=True),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=transient,
        )
        self._task = self._progress.add_task(description, total=None)

    def update(self, progress: DownloadProgress) -> None:
        self._progress.update(self._task, completed=progress.bytes_done, total=progress.bytes_total)

    def __enter__(self) -> Self:
        self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._progress.stop()
