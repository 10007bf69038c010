"""A periodic reconcile loop whose failing steps are logged and retried with backoff."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

logger = logging.getLogger(__name__)


@dataclass
class PeriodicLoop:
    name: str
    step: Callable[[], Awaitable[object]]
    interval: float
    max_backoff: float = 30.0

    async def run(self, stop: asyncio.Event) -> None:
        delay = self.interval
        while not stop.is_set():
            try:
                await self.step()
                delay = self.interval
            except asyncio.CancelledError:
                raise
            except Exception:
                delay = min(self.max_backoff, max(self.interval, delay * 2))
                logger.exception("%s step failed; retrying in %.1f s", self.name, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)
