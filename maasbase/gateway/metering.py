"""Usage metering: one cheap record per request, sent to the control plane in batches.

A request appends a ``Usage`` to an in-memory buffer (no I/O on the request path); a
background task sends the buffer through a ``UsageSink`` every ``flush_interval``
seconds in batches of at most ``batch_size``. A failed send keeps the records for the
next round; past ``max_buffer`` records the oldest are dropped and counted.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from maasbase.common.errors import MaasError, Unavailable
from maasbase.common.routing import UsageBatch, UsageRecord
from maasbase.gateway.control import ControlPlaneClient

logger = logging.getLogger("maasbase.gateway.metering")

USAGE_PATH = "/api/v1/gateway/usage"


class UsageSink(Protocol):
    async def send(self, batch: UsageBatch) -> None:
        """Store the batch; raise ``MaasError`` to have it sent again later."""
        ...


@dataclass(slots=True)
class Usage:
    time: float
    api_key_id: int | None
    user_id: int | None
    model: str
    endpoint: str
    upstream_id: str | None
    status: int
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: float = 0.0
    ttft_ms: float | None = None
    stream: bool = False

    def fields(self) -> dict[str, Any]:
        return {
            "time": datetime.fromtimestamp(self.time, UTC),
            "api_key_id": self.api_key_id,
            "user_id": self.user_id,
            "model": self.model,
            "endpoint": self.endpoint,
            "upstream_id": self.upstream_id,
            "status": self.status,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "latency_ms": round(self.latency_ms, 3),
            "ttft_ms": None if self.ttft_ms is None else round(self.ttft_ms, 3),
            "stream": self.stream,
        }

    def to_record(self) -> UsageRecord:
        return UsageRecord.model_validate(self.fields())


def batch_of(usages: list[Usage]) -> UsageBatch:
    return UsageBatch.model_validate({"records": [u.fields() for u in usages]})


class UsageMeter:
    def __init__(
        self,
        sink: UsageSink,
        *,
        flush_interval: float = 1.0,
        batch_size: int = 1000,
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
                await self.sink.send(batch_of(chunk))
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
    """``POST {server}/api/v1/gateway/usage`` with body ``UsageBatch``; any 2xx is stored."""

    def __init__(
        self, server_url: str, token: str, *, client: ControlPlaneClient | None = None
    ) -> None:
        self.client = client or ControlPlaneClient(server_url, token)

    async def send(self, batch: UsageBatch) -> None:
        body = batch.model_dump_json().encode()
        status, data = await self.client.request("POST", USAGE_PATH, body=body)
        if not 200 <= status < 300:
            raise Unavailable(f"POST {USAGE_PATH} answered HTTP {status}: {data[:200]!r}")

    async def aclose(self) -> None:
        await self.client.aclose()
