"""Wake-ups for watchers and controllers when desired state may have changed.

Level-triggered: a notification says "look again", never what changed, so a lost or
merged notification costs at most one polling interval.
"""

from __future__ import annotations

import asyncio
import contextlib


class ChangeNotifier:
    def __init__(self) -> None:
        self._version = 0
        self._event = asyncio.Event()

    @property
    def version(self) -> int:
        return self._version

    def notify(self) -> None:
        self._version += 1
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, since: int, seconds: float) -> int:
        """Return once the version moved past ``since`` or ``seconds`` passed."""
        if self._version != since:
            return self._version
        event = self._event
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), seconds)
        return self._version
