"""Sending a request to one of a model's upstreams, and relaying the answer.

``Forwarder.open`` chooses an upstream, takes a balancer slot and sends the request;
a connection error or a 502/503 answer takes the upstream out of rotation and, while
nothing has reached the client yet, sends the request once more to another upstream.
The caller relays the answer (``relay_json``, ``relay_sse``, ``relay_raw``) and
releases the slot and the response in ``finally``: a client that goes away closes the
upstream connection, which stops the engine's work on that request.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from maasbase.common.clock import Clock
from maasbase.common.routing import RoutedModel, Upstream
from maasbase.gateway.balancer import Balancer
from maasbase.gateway.call import Call, Headers
from maasbase.gateway.errors import NoUpstream, UpstreamFailed, UpstreamTimeout
from maasbase.gateway.payloads import SseUsage, usage_from_json
from maasbase.gateway.upstream import UpstreamClient, UpstreamResponse

logger = logging.getLogger("maasbase.gateway.proxy")

HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"transfer-encoding", b"content-length", b"date", b"server",
    b"proxy-connection", b"te", b"trailer", b"upgrade",
})  # fmt: skip
SSE_HEADERS = [(b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]


@dataclass(slots=True)
class Outgoing:
    """What to send upstream; ``body_for`` adapts the body to the chosen upstream."""

    model: RoutedModel
    path: str  # below the upstream's base URL, e.g. "/chat/completions"
    headers: Headers
    body_for: Callable[[Upstream], bytes]
    affinity: str | None = None


def upstream_headers(headers: Headers, upstream: Upstream) -> Headers:
    if upstream.api_key:
        return [*headers, (b"authorization", b"Bearer " + upstream.api_key.encode())]
    return headers


def response_headers(response: UpstreamResponse) -> Headers:
    return [(k, v) for k, v in response.headers if k not in HOP_BY_HOP]


def content_type(response: UpstreamResponse) -> bytes:
    for name, value in response.headers:
        if name == b"content-type":
            return value
    return b""


class Forwarder:
    def __init__(
        self,
        client: UpstreamClient,
        balancer: Balancer,
        clock: Clock,
        *,
        retries: int = 1,
        retry_statuses: frozenset[int] = frozenset({502, 503}),
    ) -> None:
        self.client = client
        self.balancer = balancer
        self.clock = clock
        self.retries = retries
        self.retry_statuses = retry_statuses

    async def open(self, out: Outgoing) -> tuple[Upstream, UpstreamResponse]:
        """The upstream that answered and its response, holding a balancer slot."""
        balancer = self.balancer
        tried: list[str] = []
        failure: UpstreamFailed | None = None
        upstream = balancer.choose(out.model, self.clock.monotonic(), affinity=out.affinity)
        while upstream is not None:
            tried.append(upstream.id)
            balancer.acquire(upstream.id)
            try:
                response = await self.client.request(
                    b"POST",
                    upstream.base_url + out.path,
                    upstream_headers(out.headers, upstream),
                    out.body_for(upstream),
                )
            except UpstreamTimeout:
                balancer.release(upstream.id)
                raise
            except UpstreamFailed as exc:
                balancer.release(upstream.id)
                self._failed(upstream, exc.message)
                failure = exc
                upstream = self._next(out, tried)
                continue
            except BaseException:
                balancer.release(upstream.id)
                raise
            if response.status not in self.retry_statuses:
                if response.status < 500:
                    balancer.succeeded(upstream.id)
                return upstream, response
            self._failed(upstream, f"HTTP {response.status}")
            following = self._next(out, tried)
            if following is None:
                return upstream, response
            response.release()  # unread: the connection is closed, not reused
            balancer.release(upstream.id)
            upstream = following
        if failure is not None:
            raise UpstreamFailed(
                f"no instance of model '{out.model.name}' could be reached: {failure.message}; "
                "retry shortly"
            )
        raise NoUpstream(
            f"model '{out.model.name}' has no running instance; start or scale up a "
            "deployment of it, or retry once an instance is running"
        )

    def _next(self, out: Outgoing, tried: list[str]) -> Upstream | None:
        if len(tried) > self.retries:
            return None
        now = self.clock.monotonic()
        return self.balancer.choose(out.model, now, affinity=out.affinity, exclude=tried)

    def _failed(self, upstream: Upstream, reason: str) -> None:
        seconds = self.balancer.failed(upstream.id, self.clock.monotonic())
        if seconds is not None:
            logger.warning("upstream %s (%s) failed: %s; out of rotation for %.0f s",
                           upstream.id, upstream.base_url, reason, seconds)  # fmt: skip


async def relay_json(call: Call, response: UpstreamResponse) -> tuple[int, int] | None:
    """Send the whole body at once; the engine's token usage when it reported one."""
    body = await response.read()
    headers = response_headers(response)
    await call.raw(response.status, headers, body)
    return usage_from_json(body) if response.status < 400 else None


async def relay_sse(call: Call, response: UpstreamResponse, usage: SseUsage) -> None:
    """Relay an SSE stream event by event as it arrives. The caller has sent the start."""
    while True:
        chunk = await response.next_chunk()
        if not chunk:
            break
        data = usage.feed(chunk)
        if data:
            if call.ttft is None:
                call.first_byte()
            await call.write(data)
    await call.end(usage.finish())


async def relay_raw(call: Call, response: UpstreamResponse) -> None:
    """Relay any other body (audio, images) chunk by chunk. The caller has sent the start."""
    while True:
        chunk = await response.next_chunk()
        if not chunk:
            break
        if call.ttft is None:
            call.first_byte()
        await call.write(chunk)
    await call.end()
