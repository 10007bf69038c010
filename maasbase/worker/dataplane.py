"""The worker's data-plane proxy: the only way in to the engines a worker runs.

Engines listen on the worker's loopback (``127.0.0.1``) only. Gateways reach one at
``/proxy/instances/{instance_id}/{path}`` on the worker API's port; the request goes on
to ``http://127.0.0.1:<that instance's port>/{path}``. The caller must present the
worker's data-plane secret as ``Authorization: Bearer <secret>``: the server derives it
per worker and hands it to the worker at registration and to gateways in the routing
table, so only MaaS-Base's gateways — which check API keys, enforce quotas and meter
usage — can send inference to an engine.

Why a proxy on the worker rather than an API key per engine:

- engines bind to loopback, so nothing of theirs is reachable from the network, not even
  what engines leave open when given a key (llama.cpp's ``/health`` and ``/v1/models``);
- backends that take no API key at all are protected the same way;
- it is the worker-side hop that routing through signed tickets (serverless two-step
  routing) needs: one place that checks the caller and forwards to the local engine.

The proxy is a raw ASGI app in front of the worker API's Starlette routes, with no
framework on this path. Request and response bodies stream through unbuffered (SSE
works event by event); status and headers pass through minus hop-by-hop ones and the
caller's ``Authorization``. A client that goes away cancels the upstream request, which
closes the engine connection and so stops the engine's work. Only ports of instances
this worker runs can be reached; anything else is a 404.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from yarl import URL

logger = logging.getLogger(__name__)

PREFIX = "/proxy/instances/"
ENGINE_HOST = "127.0.0.1"
CONNECT_TIMEOUT_SECONDS = 10.0
KEEPALIVE_SECONDS = 4.0  # below the ~5 s idle timeout of common engine servers

# Never forwarded, either way: hop-by-hop headers (RFC 9110 7.6.1), the caller's
# credential and the host it named. The response keeps content-length when the engine
# sent one (the body passes unchanged); uvicorn adds its own date and server.
REQUEST_DROPPED = frozenset({
    b"authorization", b"host", b"connection", b"keep-alive", b"proxy-connection",
    b"proxy-authorization", b"te", b"trailer", b"transfer-encoding", b"upgrade", b"expect",
})  # fmt: skip
RESPONSE_DROPPED = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"proxy-authenticate", b"te",
    b"trailer", b"transfer-encoding", b"upgrade", b"date", b"server",
})  # fmt: skip


async def _send_error(send: Send, status: int, code: str, message: str) -> None:
    body = json.dumps({"error": {"message": message, "type": code, "code": code}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _target(scope: Scope) -> tuple[int, str] | None:
    """Instance id and the engine-side path (as sent, percent-encoded) of a request."""
    raw: bytes = scope.get("raw_path") or scope["path"].encode()
    number, slash, tail = raw[len(PREFIX) :].partition(b"/")
    if not number.isdigit() or len(number) > 12:
        return None
    return int(number), (slash + tail or b"/").decode("latin-1")


def _presented(headers: list[tuple[bytes, bytes]]) -> bytes:
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.partition(b" ")
            return token.strip() if scheme.lower() == b"bearer" else b""
    return b""


def _request_headers(headers: list[tuple[bytes, bytes]]) -> tuple[list[tuple[str, str]], bool]:
    """Headers to send to the engine, and whether the request has a body."""
    named = {b""}
    has_body = False
    for name, value in headers:
        if name == b"connection":
            named.update(token.strip().lower() for token in value.split(b","))
        elif name == b"content-length":
            has_body = value.strip() != b"0"
        elif name == b"transfer-encoding":
            has_body = True
    out = [
        (name.decode("latin-1"), value.decode("latin-1"))
        for name, value in headers
        if name not in REQUEST_DROPPED and name not in named
    ]
    return out, has_body


class _Exchange:
    """One proxied request: reads the caller's body, notices when the caller leaves."""

    __slots__ = ("body_read", "complete", "gone", "receive", "task")

    def __init__(self, receive: Receive) -> None:
        self.receive = receive
        self.body_read = False
        self.complete = False
        self.gone = False
        self.task = asyncio.current_task()

    async def body(self, first: bytes) -> AsyncIterator[bytes]:
        if first:
            yield first
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                self.gone = True
                raise _ClientGone
            chunk: bytes = message.get("body", b"")
            if chunk:
                yield chunk
            if not message.get("more_body", False):
                break
        self.body_read = True

    async def watch(self) -> None:
        """After the body: cancel the exchange when the caller disconnects."""
        while True:
            message: Message = await self.receive()
            if message["type"] == "http.disconnect":
                break
        if not self.complete and self.task is not None:
            self.gone = True
            self.task.cancel()


class _ClientGone(Exception):
    pass


class DataPlane:
    """ASGI app: ``/proxy/instances/...`` to the local engines, everything else to ``app``.

    ``secret`` and ``port_of`` are read on every request (the secret changes on
    re-registration; instances come and go). ``aclose`` closes the pooled client.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        secret: Callable[[], str | None],
        port_of: Callable[[int], int | None],
        engine_host: str = ENGINE_HOST,
    ) -> None:
        self.app = app
        self.secret = secret
        self.port_of = port_of
        self.host = engine_host
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=KEEPALIVE_SECONDS),
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
                # No read timeout: generation may take long; the caller bounds it, and
                # a caller that goes away cancels the request.
                timeout=aiohttp.ClientTimeout(total=None, connect=CONNECT_TIMEOUT_SECONDS),
                skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(PREFIX):
            await self.app(scope, receive, send)
            return
        expected = self.secret()
        presented = _presented(scope["headers"])
        if not expected or not hmac.compare_digest(presented, expected.encode()):
            await _send_error(
                send, 401, "unauthenticated",
                "the data-plane proxy needs this worker's data-plane secret; send inference "
                "through a MaaS-Base gateway",
            )  # fmt: skip
            return
        target = _target(scope)
        port = self.port_of(target[0]) if target is not None else None
        if target is None or port is None:
            what = f"instance {target[0]}" if target is not None else "this path"
            await _send_error(send, 404, "not_found", f"{what} does not run on this worker")
            return
        query = scope.get("query_string", b"").decode("latin-1")
        url = URL.build(
            scheme="http", host=self.host, port=port, path=target[1], query_string=query,
            encoded=True,
        )  # fmt: skip
        exchange = _Exchange(receive)
        try:
            await self._forward(scope, send, exchange, url, target[0])
        except asyncio.CancelledError:
            if not exchange.gone or exchange.task is None or exchange.task.uncancel() > 0:
                raise
        except _ClientGone:
            pass

    async def _forward(
        self, scope: Scope, send: Send, exchange: _Exchange, url: URL, instance_id: int
    ) -> None:
        headers, has_body = _request_headers(scope["headers"])
        data: Any = None
        if has_body:
            first = await exchange.receive()
            if first["type"] == "http.disconnect":
                return
            if first.get("more_body", False):
                data = exchange.body(first.get("body", b""))
            else:
                data = first.get("body", b"")
                exchange.body_read = True
        else:
            exchange.body_read = True
        watcher: asyncio.Task[None] | None = None
        if exchange.body_read:
            watcher = asyncio.create_task(exchange.watch())
        try:
            try:
                response = await self._client().request(
                    scope["method"], url, data=data, headers=headers, allow_redirects=False
                )
            except (aiohttp.ClientError, TimeoutError) as exc:
                if exchange.gone:
                    return
                await _send_error(
                    send, 502, "engine_unreachable",
                    f"the engine of instance {instance_id} does not answer on this worker "
                    f"({type(exc).__name__}); retry shortly",
                )  # fmt: skip
                return
            if watcher is None:
                watcher = asyncio.create_task(exchange.watch())
            await self._relay(send, exchange, response)
        finally:
            if watcher is not None:
                watcher.cancel()

    async def _relay(
        self, send: Send, exchange: _Exchange, response: aiohttp.ClientResponse
    ) -> None:
        try:
            headers = [
                (lower, value)
                for name, value in response.raw_headers
                if (lower := name.lower()) not in RESPONSE_DROPPED
            ]
            await send(
                {"type": "http.response.start", "status": response.status, "headers": headers}
            )
            content = response.content
            while True:
                chunk = await content.readany()
                if content.at_eof():  # the last part (often the whole body): one message
                    exchange.complete = True
                    await send({"type": "http.response.body", "body": chunk})
                    break
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except (aiohttp.ClientError, TimeoutError) as exc:
            # The engine failed mid-body: the caller's connection is closed unfinished.
            logger.warning("engine response cut off: %r", exc)
            response.close()
            return
        except BaseException:
            response.close()  # closing the engine connection stops its work
            raise
        response.release()
