"""Usage metering: one cheap record per request, sent to the control plane in batches.

A request appends a ``Usage`` to an in-memory buffer (no I/O on the request path); a
background task sends the buffer through a ``UsageSink`` every ``flush_interval``
seconds in batches of at most ``batch_size``, letting requests run between batches.
Nothing on the way is validated again (the records are the gateway's own typed
objects), so a second of traffic costs the loop a few milliseconds, not tens. A failed
send keeps the records for the next round; past ``max_buffer`` records the oldest are
dropped and counted.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Protocol

import orjson

from maasbase.common.errors import MaasError, Unavailable
from maasbase.common.routing import Usage
from maasbase.gateway.control import ControlPlaneClient

logger = logging.getLogger("maasbase.gateway.metering")

USAGE_PATH = "/api/v1/gateway/usage"


class UsageSink(Protocol):
    async def send(self, usages: list[Usage]) -> None:
        """Store the records; raise ``MaasError`` to have them sent again later."""
        ...


class UsageMeter:
    def __init__(
        self,
        sink: UsageSink,
        *,
        flush_interval: float = 1.0,
        batch_size: int = 500,
        max_buffer: int = 200_000,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.sink = sink
        self.flush_interval = flush_interval
        self.batch_size = batch_size
        self.max_buffer = max_buffer
        self._sleep = sleep
        self._buffer: deque[Usage] = deque()
        self.dropped = 0
        self.sent = 0

    def record(self, usage: Usage) -> None:
        buffer = self._buffer
        buffer.append(usage)
        if len(buffer) > self.max_buffer:
            buffer.popleft()
            self.dropped += 1

    @property
    def pending(self) -> int:
        return len(self._buffer)

    async def flush(self) -> bool:
        """Send everything buffered; False when the sink failed (records are kept)."""
        while self._buffer:
            count = min(self.batch_size, len(self._buffer))
            chunk = [self._buffer.popleft() for _ in range(count)]
            try:
                await self.sink.send(chunk)
            except Exception as exc:
                self._requeue(chunk)
                reason = exc.message if isinstance(exc, MaasError) else repr(exc)
                logger.warning("sending usage failed (%s); %d records kept", reason,
                               len(self._buffer))  # fmt: skip
                return False
            except BaseException:
                self._requeue(chunk)
                raise
            self.sent += count
            if self._buffer:
                await asyncio.sleep(0)  # let requests run between batches
        return True

    def _requeue(self, chunk: list[Usage]) -> None:
        self._buffer.extendleft(reversed(chunk))
        while len(self._buffer) > self.max_buffer:
            self._buffer.pop()
            self.dropped += 1

    async def run(self) -> None:
        """Flush every ``flush_interval`` until cancelled; back off while the sink fails."""
        failures = 0
        while True:
            await self._sleep(self.flush_interval * min(2**failures, 30))
            failures = 0 if await self.flush() else failures + 1


class HttpUsageSink:
    """``POST {server}/api/v1/gateway/usage`` with a ``UsageBatch`` body; any 2xx is stored."""

    def __init__(
        self, server_url: str, token: str, *, client: ControlPlaneClient | None = None
    ) -> None:
        self.client = client or ControlPlaneClient(server_url, token)

    async def send(self, usages: list[Usage]) -> None:
        body = orjson.dumps({"records": [usage.row() for usage in usages]})
        status, data = await self.client.request("POST", USAGE_PATH, body=body)
        if not 200 <= status < 300:
            raise Unavailable(f"POST {USAGE_PATH} answered HTTP {status}: {data[:200]!r}")

    async def aclose(self) -> None:
        await self.client.aclose()
