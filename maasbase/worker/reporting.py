"""Batches instance reports to the server: the newest report per instance wins, state
changes go out at once, progress updates at most every ``interval`` seconds."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from maasbase.common.errors import MaasError
from maasbase.common.instances import InstanceReport

logger = logging.getLogger(__name__)

Send = Callable[[list[InstanceReport]], Awaitable[None]]


class ReportQueue:
    def __init__(self, send: Send, *, interval: float = 1.0) -> None:
        self._send = send
        self._interval = interval
        self._pending: dict[int, InstanceReport] = {}
        self._last_state: dict[int, str] = {}
        self._urgent = asyncio.Event()

    def put(self, report: InstanceReport) -> None:
        self._pending[report.instance_id] = report
        key = f"{report.restart_count}:{report.state}"
        if self._last_state.get(report.instance_id) != key:
            self._last_state[report.instance_id] = key
            self._urgent.set()

    async def flush(self) -> None:
        if not self._pending:
            return
        batch, self._pending = list(self._pending.values()), {}
        try:
            await self._send(batch)
        except MaasError as exc:
            logger.warning("could not report instance states: %s; retrying", exc.message)
            for report in batch:  # keep them unless newer ones arrived meanwhile
                self._pending.setdefault(report.instance_id, report)
            raise

    async def run(self, stop: asyncio.Event) -> None:
        delay = self._interval
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._urgent.wait(), timeout=delay)
            self._urgent.clear()
            try:
                await self.flush()
                delay = self._interval
            except MaasError:
                delay = min(30.0, delay * 2)
        with contextlib.suppress(MaasError):
            await self.flush()
