"""Usage metering: one cheap record per request, sent to the control plane in batches.

A request appends a ``Usage`` to an in-memory buffer (no I/O on the request path),
brought within the bounds the server stores (``Usage.fit``); a background task sends
the buffer through a ``UsageSink`` every ``flush_interval`` seconds in batches of at
most ``batch_size``, letting requests run between batches. A failed send keeps the
records for the next round; past ``max_buffer`` records the oldest are dropped and
counted. Records the server rejects (``UsageIngest.rejected``) are logged and dropped:
sent again they would be rejected again.

With a ``UsageSpool`` (standalone gateways), each flush first writes the buffer to disk
(in a thread, off the event loop), then sends the spooled batches oldest first and
removes each one the server answered: usage not yet stored survives a restart.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Protocol

import orjson
from pydantic import ValidationError

from maasbase.common.errors import MaasError, Unavailable
from maasbase.common.routing import Usage, UsageIngest
from maasbase.gateway.control import ControlPlaneClient
from maasbase.gateway.spool import UsageSpool

logger = logging.getLogger("maasbase.gateway.metering")

USAGE_PATH = "/api/v1/gateway/usage"
LOGGED_REJECTIONS = 5


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
        spool: UsageSpool | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.sink = sink
        self.flush_interval = flush_interval
        self.batch_size = batch_size
        self.max_buffer = max_buffer
        self._sleep = sleep
        self.spool = spool
        self._flushing: asyncio.Future[bool] | None = None
        self._buffer: deque[Usage] = deque()
        self.dropped = 0
        self.sent = 0

    def record(self, usage: Usage) -> None:
        usage.fit()
        buffer = self._buffer
        buffer.append(usage)
        if len(buffer) > self.max_buffer:
            buffer.popleft()
            self.dropped += 1

    @property
    def pending(self) -> int:
        """Records not sent yet, in memory (those in a spool are counted by the spool)."""
        return len(self._buffer)

    async def flush(self) -> bool:
        """Send everything buffered (and spooled); False when the sink failed (records
        are kept)."""
        if self.spool is not None and self.spool.opened:
            await self._spill(self.spool)
            if not await self._send_spooled(self.spool):
                return False
        return await self._send_buffer()

    async def _send_buffer(self) -> bool:
        while self._buffer:
            count = min(self.batch_size, len(self._buffer))
            chunk = [self._buffer.popleft() for _ in range(count)]
            try:
                await self.sink.send(chunk)
            except Exception as exc:
                self._requeue(chunk)
                self._failed(exc, len(self._buffer))
                return False
            except BaseException:
                self._requeue(chunk)
                raise
            self.sent += count
            if self._buffer:
                await asyncio.sleep(0)  # let requests run between batches
        return True

    @staticmethod
    def _failed(exc: Exception, kept: int) -> None:
        reason = exc.message if isinstance(exc, MaasError) else repr(exc)
        logger.warning("sending usage failed (%s); %d records kept", reason, kept)

    async def _spill(self, spool: UsageSpool) -> None:
        """Move the buffer to the spool; on a disk error the records stay in memory (and
        are sent from there)."""
        while self._buffer:
            count = min(self.batch_size, len(self._buffer))
            chunk = [self._buffer.popleft() for _ in range(count)]
            failure: OSError | None = None
            try:
                await asyncio.to_thread(spool.append, chunk)
            except OSError as exc:
                failure = exc
            # Cancelled: the thread still writes the file, so the chunk is not put back.
            if failure is not None:
                self._requeue(chunk)
                logger.error("cannot write the usage spool in %s (%s); usage is kept in "
                             "memory only", spool.folder, failure)  # fmt: skip
                return

    async def _send_spooled(self, spool: UsageSpool) -> bool:
        while (batch := spool.oldest()) is not None:
            unreadable: ValueError | OSError | None = None
            usages: list[Usage] = []
            try:
                usages = await asyncio.to_thread(spool.read, batch)
            except (ValueError, OSError) as exc:
                unreadable = exc
            if unreadable is not None:
                logger.error("usage spool file %s is unreadable (%s); %d records dropped",
                             batch.path, unreadable, batch.records)  # fmt: skip
                await asyncio.to_thread(spool.remove, batch)
                continue
            try:
                await self.sink.send(usages)
            except Exception as exc:
                self._failed(exc, len(self._buffer) + spool.pending)
                return False
            await asyncio.to_thread(spool.remove, batch)
            self.sent += len(usages)
        return True

    def _requeue(self, chunk: list[Usage]) -> None:
        self._buffer.extendleft(reversed(chunk))
        while len(self._buffer) > self.max_buffer:
            self._buffer.pop()
            self.dropped += 1

    async def run(self) -> None:
        """Flush every ``flush_interval`` until cancelled; back off while the sink fails.
        Cancelled during a flush, that flush goes on (a batch the server stored but had
        not answered yet would otherwise be kept, and sent twice): ``close`` awaits it."""
        failures = 0
        while True:
            await self._sleep(self.flush_interval * min(2**failures, 30))
            self._flushing = flushing = asyncio.ensure_future(self.flush())
            failures = 0 if await asyncio.shield(flushing) else failures + 1

    async def close(self) -> bool:
        """At shutdown, once ``run`` is cancelled: finish its flush, then send the rest."""
        flushing = self._flushing
        if flushing is not None and not flushing.done():
            await asyncio.gather(flushing, return_exceptions=True)
        return await self.flush()


class HttpUsageSink:
    """``POST {server}/api/v1/gateway/usage`` with a ``UsageBatch`` body. The server
    stores the valid records and lists the others (``UsageIngest``): those are logged and
    dropped. An unreachable server (or HTTP 5xx, 408, 429) raises ``Unavailable``: the
    batch is sent again later. Any other refusal of the whole batch is permanent: it is
    logged and dropped, never retried forever."""

    def __init__(
        self, server_url: str, token: str, *, client: ControlPlaneClient | None = None
    ) -> None:
        self.client = client or ControlPlaneClient(server_url, token)

    async def send(self, usages: list[Usage]) -> None:
        body = orjson.dumps({"records": [usage.row() for usage in usages]})
        status, data = await self.client.request("POST", USAGE_PATH, body=body)
        if status in (408, 429):
            raise Unavailable(f"POST {USAGE_PATH} answered HTTP {status}; sent again later")
        if not 200 <= status < 300:
            logger.error("the control plane refused a usage batch (HTTP %d: %r); its %d "
                         "records are dropped", status, data[:200], len(usages))  # fmt: skip
            return
        log_rejected(answer_of(data, len(usages)), usages)

    async def aclose(self) -> None:
        await self.client.aclose()


def answer_of(data: bytes, sent: int) -> UsageIngest:
    """The server's answer to a batch; a server that answers without one stored them all."""
    try:
        return UsageIngest.model_validate_json(data)
    except ValidationError:
        return UsageIngest(stored=sent)


def log_rejected(answer: UsageIngest, usages: list[Usage]) -> None:
    """One error line per rejected record (the first few), each with the server's reason."""
    for item in answer.rejected[:LOGGED_REJECTIONS]:
        key: int | None = None
        model = "?"
        if 0 <= item.index < len(usages):
            key, model = usages[item.index].api_key_id, usages[item.index].model
        logger.error("the control plane rejected a usage record (dropped; key %s, model %r): "
                     "%s", key, model, item.reason)  # fmt: skip
    if len(answer.rejected) > LOGGED_REJECTIONS:
        logger.error("the control plane rejected %d more usage records of the same batch",
                     len(answer.rejected) - LOGGED_REJECTIONS)  # fmt: skip
