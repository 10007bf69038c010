"""A keyed work queue: each key is processed by one task at a time, failures are retried
with per-key exponential backoff, and adding a queued key again is a no-op."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)


@dataclass
class KeyedQueue:
    handler: Callable[[Hashable], Awaitable[None]]
    name: str
    base_backoff: float = 0.5
    max_backoff: float = 60.0
    _pending: dict[Hashable, None] = field(default_factory=dict)
    _failures: dict[Hashable, int] = field(default_factory=dict)
    _wakeup: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, key: Hashable) -> None:
        self._pending[key] = None
        self._wakeup.set()

    def add_after(self, key: Hashable, delay: float) -> None:
        loop = asyncio.get_running_loop()
        loop.call_later(delay, self.add, key)

    def backoff(self, key: Hashable) -> float:
        failures = self._failures.get(key, 0)
        return float(min(self.max_backoff, self.base_backoff * 2 ** max(0, failures - 1)))

    async def drain(self) -> int:
        """Process every queued key once (serially); return how many were handled."""
        handled = 0
        while self._pending:
            key = next(iter(self._pending))
            del self._pending[key]
            try:
                await self.handler(key)
                self._failures.pop(key, None)
            except asyncio.CancelledError:
                raise
            except Exception:
                self._failures[key] = self._failures.get(key, 0) + 1
                delay = self.backoff(key)
                logger.exception("%s: %r failed; retrying in %.1f s", self.name, key, delay)
                self.add_after(key, delay)
            handled += 1
        return handled

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self._wakeup.clear()
            await self.drain()
            waiter = asyncio.ensure_future(self._wakeup.wait())
            stopper = asyncio.ensure_future(stop.wait())
            await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            stopper.cancel()
