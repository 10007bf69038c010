"""The gateway app: ``/v1/*`` dispatch, lifecycle, model listing.

``create_gateway_app`` wires the seams (routing source, key resolver and the
credential-change feed that keeps its cache current, usage sink, limit store, upstream
client) into a ``GatewayApp``. It serves ``Call``s from either
server: its own (``server.GatewayServer``, the fast path of standalone gateways), or
any ASGI server, as the top-level app (the lifespan starts and stops it) or mounted:
the control plane dispatches ``/v1/*`` to it and calls ``start()`` and ``aclose()``
itself. Paths are looked up in a dict; there is no per-request framework (no routing
tree, middleware or models).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

from maasbase.common.clock import Clock, SystemClock
from maasbase.common.errors import MaasError, NotFound, Unavailable
from maasbase.common.routing import KeyRefused, RoutedModel
from maasbase.gateway.aiohttp_upstream import AiohttpUpstreamClient
from maasbase.gateway.asgi import AsgiCall, Receive, Scope, Send
from maasbase.gateway.auth import CachedKeyResolver, Caller, KeyResolver
from maasbase.gateway.balancer import Balancer
from maasbase.gateway.call import Call
from maasbase.gateway.config import GatewayConfig
from maasbase.gateway.errors import (
    ClientDisconnected,
    InvalidApiKey,
    MethodNotAllowed,
    ModelNotFound,
    NoUpstream,
    clip,
)
from maasbase.gateway.handlers import ENDPOINTS, Handlers
from maasbase.gateway.key_changes import KeyChangeSource, follow_key_changes
from maasbase.gateway.limits import LimitStore, MemoryLimitStore
from maasbase.gateway.metering import UsageMeter, UsageSink
from maasbase.gateway.proxy import Forwarder
from maasbase.gateway.routing import RouteHolder, RoutingSource, follow_routes
from maasbase.gateway.spool import UsageSpool
from maasbase.gateway.upstream import PooledUpstreamClient, UpstreamClient

logger = logging.getLogger("maasbase.gateway")

Route = Callable[[Call], Awaitable[None]]
OTHER_BODY_BYTES = 64 * 1024  # the body limit of paths without an endpoint

MODEL_PREFIX = "/v1/models/"  # GET /v1/models/{model}


class GatewayApp:
    def __init__(
        self,
        *,
        routes: RoutingSource,
        keys: KeyResolver,
        usage: UsageSink,
        limits: LimitStore | None = None,
        config: GatewayConfig | None = None,
        clock: Clock | None = None,
        upstream: UpstreamClient | None = None,
        rng: random.Random | None = None,
        key_changes: KeyChangeSource | None = None,
    ) -> None:
        self.config = config = config or GatewayConfig()
        self.clock = clock = clock or SystemClock()
        self.source = routes
        self.holder = RouteHolder()
        self.balancer = Balancer(config.policy, cooldown=config.cooldown, rng=rng)
        self.holder.on_change(lambda snapshot: self.balancer.retain(snapshot.upstream_ids))
        self.keys = CachedKeyResolver(
            keys, clock=clock, ttl=config.key_cache_ttl, negative_ttl=config.key_negative_ttl
        )
        self.key_changes = key_changes
        spool = None
        if config.usage_spool is not None:
            spool = UsageSpool(config.usage_spool, max_bytes=config.usage_spool_max_bytes)
        self.meter = UsageMeter(
            usage,
            flush_interval=config.usage_flush_interval,
            batch_size=config.usage_batch_size,
            spool=spool,
        )
        self.limits: LimitStore = limits or MemoryLimitStore()
        self.upstream = upstream or _upstream_client(config)
        self.forwarder = Forwarder(
            self.upstream,
            self.balancer,
            clock,
            retries=config.retries,
            retry_statuses=config.retry_statuses,
        )
        self.handlers = Handlers(self)
        self.affinity_header = (
            config.affinity_header.lower().encode() if config.affinity_header else None
        )
        self._post: dict[str, Route] = {
            path: self.handlers.openai(endpoint) for path, endpoint in ENDPOINTS.items()
        }
        self._post["/v1/messages"] = self.handlers.messages
        self._get: dict[str, Route] = {
            "/v1/models": self._models,
            "/healthz": self._healthz,
            "/readyz": self._readyz,
        }
        json_limit = min(config.max_json_body_bytes, config.max_body_bytes)
        self.body_limits: dict[str, int] = {
            path: config.max_body_bytes if endpoint.multipart else json_limit
            for path, endpoint in ENDPOINTS.items()
        }
        self.body_limits["/v1/messages"] = json_limit
        self._tasks: list[asyncio.Task[None]] = []

    def endpoints(self) -> list[tuple[str, str]]:
        """Every (method, path) this app answers; ``{model}`` stands for a model's name."""
        answered = [("POST", path) for path in self._post]
        answered += [("GET", path) for path in self._get]
        answered.append(("GET", MODEL_PREFIX + "{model}"))
        return answered

    # lifecycle
    async def start(self) -> None:
        if self._tasks:
            return
        spool = self.meter.spool
        if spool is not None:
            failure: OSError | None = None
            try:
                await asyncio.to_thread(spool.open)
            except OSError as exc:
                failure = exc
            if failure is not None:  # serving comes first; the log says what is at risk
                logger.error("cannot use the usage spool in %s (%s); usage is kept in memory "
                             "only and is lost if the gateway stops while the control plane "
                             "is unreachable", spool.folder, failure)  # fmt: skip
                self.meter.spool = None
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(follow_routes(self.source, self.holder), name="gateway-routes"),
            loop.create_task(self.meter.run(), name="gateway-usage"),
        ]
        if self.key_changes is not None:
            self._tasks.append(
                loop.create_task(
                    follow_key_changes(self.key_changes, self.keys), name="gateway-key-changes"
                )
            )

    async def aclose(self) -> None:
        """Stop following routes, send the usage still buffered, close connections."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        try:
            async with asyncio.timeout(5):
                await self.meter.close()
        except TimeoutError:
            logger.warning("usage not sent at shutdown: %d records", self.meter.pending)
        if self.meter.spool is not None:
            self.meter.spool.close()
            if self.meter.spool.pending:
                logger.warning("usage not sent at shutdown: %d records kept in %s for the "
                               "next start", self.meter.spool.pending,
                               self.meter.spool.folder)  # fmt: skip
        await self.upstream.aclose()
        await self.limits.aclose()

    # ASGI
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                failed: Exception | None = None
                try:
                    await self.start()
                except Exception as exc:
                    failed = exc
                if failed is not None:
                    await send({"type": "lifespan.startup.failed", "message": repr(failed)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.handle(AsgiCall(scope, receive, send, self.affinity_header))

    async def handle(self, call: Call) -> None:
        """Answer one request; raises only a cancellation from outside, or
        ``ResponseAborted`` to an ASGI server when a started response fails."""
        path = call.path
        if len(path) > 1 and path.endswith("/"):
            path = path.rstrip("/")
        method = call.method
        failure: MaasError | None = None
        try:
            try:
                route = (self._post if method == "POST" else self._get).get(path)
                if route is None:
                    route = self._fallback(path, method)
                await route(call)
            except MaasError as exc:
                failure = exc
            except ClientDisconnected:
                pass
            except asyncio.CancelledError:
                if not call.swallow_cancel():
                    raise
            except Exception:
                logger.exception("gateway error on %s %s", method, path)
                failure = MaasError("internal gateway error; the gateway's log has details")
            if failure is not None:  # answered outside the handlers: see compiled.py
                await call.fail(failure)
        finally:
            call.close()

    def body_limit(self, method: str, path: str) -> int:
        """The largest request body ``method path`` takes: per endpoint, none for GET
        endpoints, a little for paths without one (enough for their 404 or 405)."""
        if len(path) > 1 and path.endswith("/"):
            path = path.rstrip("/")
        if method == "POST":
            return self.body_limits.get(path, OTHER_BODY_BYTES)
        if path in self._get or path.startswith("/v1/models/"):
            return 0
        return OTHER_BODY_BYTES

    def _fallback(self, path: str, method: str) -> Route:
        if method == "GET" and path.startswith(MODEL_PREFIX):
            return self._model
        method, shown = clip(method), clip(path)
        if path in self._post or path in self._get:
            raise MethodNotAllowed(f"{method} is not allowed on {shown}")
        raise NotFound(f"there is no endpoint {method} {shown} in this OpenAI-compatible API")

    # shared steps
    async def caller(self, call: Call) -> Caller:
        if call.api_key is None:
            raise InvalidApiKey(
                "no API key; send it as 'Authorization: Bearer <key>' (create one in the UI "
                "or with the management API)"
            )
        answer = await self.keys.resolve(call.api_key.decode("latin-1"))
        if isinstance(answer, KeyRefused):
            raise InvalidApiKey(answer.message)
        answer.check_usable(self.clock.now())
        return answer

    async def routes_loaded(self) -> None:
        """Wait (a little) for the first routing table after a start."""
        if self.holder.loaded.is_set():
            return
        try:
            async with asyncio.timeout(self.config.routes_wait):
                await self.holder.loaded.wait()
        except TimeoutError:
            raise Unavailable(
                "the gateway has no routing table yet; check that it can reach the "
                "control plane, then retry"
            ) from None

    async def routed(self, name: str) -> RoutedModel:
        if not self.holder.loaded.is_set():
            await self.routes_loaded()
        model = self.holder.snapshot.models.get(name)
        if model is None:
            raise ModelNotFound(
                f"model '{clip(name)}' does not exist; GET /v1/models lists the models you may use",
                details={"param": "model"},
            )
        if not model.upstreams:
            raise NoUpstream(
                f"model '{clip(name)}' has no running instance; start or scale up a deployment of "
                "it, or retry once an instance is running"
            )
        return model

    # GET endpoints
    def _model_entry(self, model: RoutedModel) -> dict[str, Any]:
        return {"id": model.name, "object": "model", "created": model.created,
                "owned_by": model.owned_by}  # fmt: skip

    async def _models(self, call: Call) -> None:
        caller = await self.caller(call)
        await self.routes_loaded()
        models = self.holder.snapshot.models.values()
        data = [self._model_entry(m) for m in models if caller.may_use(m.name)]
        await call.json(200, {"object": "list", "data": data})

    async def _model(self, call: Call) -> None:
        caller = await self.caller(call)
        name = call.path.removeprefix(MODEL_PREFIX)
        model = self.holder.snapshot.models.get(name)
        if model is None or not caller.may_use(name):
            raise ModelNotFound(f"model '{clip(name)}' does not exist", details={"param": "model"})
        await call.json(200, self._model_entry(model))

    async def _healthz(self, call: Call) -> None:
        await call.json(200, {"status": "ok"})

    async def _readyz(self, call: Call) -> None:
        ready = self.holder.loaded.is_set()
        body = {"status": "ready" if ready else "waiting for the routing table",
                "revision": self.holder.snapshot.revision}  # fmt: skip
        await call.json(200 if ready else 503, body)


def _upstream_client(config: GatewayConfig) -> UpstreamClient:
    if config.upstream_client == "aiohttp":
        return AiohttpUpstreamClient(
            connect_timeout=config.connect_timeout,
            read_timeout=config.read_timeout,
            max_response_bytes=config.max_response_bytes,
        )
    return PooledUpstreamClient(
        connect_timeout=config.connect_timeout,
        read_timeout=config.read_timeout,
        max_response_bytes=config.max_response_bytes,
    )


def create_gateway_app(
    *,
    routes: RoutingSource,
    keys: KeyResolver,
    usage: UsageSink,
    limits: LimitStore | None = None,
    config: GatewayConfig | None = None,
    clock: Clock | None = None,
    upstream: UpstreamClient | None = None,
    key_changes: KeyChangeSource | None = None,
) -> GatewayApp:
    """The gateway's ASGI app. As the top-level app, uvicorn's lifespan starts it; when
    mounted, call ``await app.start()`` at startup and ``await app.aclose()`` at shutdown."""
    return GatewayApp(
        routes=routes,
        keys=keys,
        usage=usage,
        limits=limits,
        config=config,
        clock=clock,
        upstream=upstream,
        key_changes=key_changes,
    )
