"""Run the platform: database (embedded or external) → server app → HTTP, plus a local
worker, and stop all of it cleanly on Ctrl-C / SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Iterator
from dataclasses import dataclass

from rich.console import Console
from starlette.types import ASGIApp, Receive, Scope, Send

from maasbase.common.config import Settings
from maasbase.common.http_server import EmbeddedServer, bind, make_server
from maasbase.gateway.app import GatewayApp, create_gateway_app
from maasbase.server.app import create_app
from maasbase.server.bootstrap import TOKEN_FILE
from maasbase.server.db.engine import normalize_url, redact
from maasbase.server.embedded_db import EmbeddedPostgres
from maasbase.server.gateway_link import LocalKeyChanges, LocalKeys, LocalRoutes, LocalUsage
from maasbase.server.runtime import Opened, close_server, open_server
from maasbase.worker.agent import WorkerAgent, WorkerConfig

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def stop_on_signals(stop: asyncio.Event) -> Iterator[None]:
    """SIGINT/SIGTERM set ``stop``; a second SIGINT interrupts for real."""
    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        if stop.is_set() and sig is signal.SIGINT:
            raise KeyboardInterrupt
        logger.info("received %s, stopping", sig.name)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        yield
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


@dataclass
class Database:
    """The database a command uses; starts the embedded PostgreSQL when no URL is given."""

    settings: Settings
    embedded: EmbeddedPostgres | None = None

    async def __aenter__(self) -> str:
        if self.settings.database_url:
            return self.settings.database_url
        self.embedded = EmbeddedPostgres(self.settings.data_dir)
        return await asyncio.to_thread(self.embedded.start)

    async def __aexit__(self, *_exc: object) -> None:
        if self.embedded is not None:
            await asyncio.to_thread(self.embedded.stop)


def worker_config(settings: Settings, *, server_url: str, token: str | None) -> WorkerConfig:
    remote = settings.server_url is not None
    return WorkerConfig(
        server_url=server_url,
        data_dir=settings.data_dir,
        name=settings.worker_name or socket.gethostname().split(".")[0],
        token=token,
        labels=settings.worker_labels,
        host=settings.worker_host or ("0.0.0.0" if remote else settings.host),
        port=settings.worker_port,
        address=settings.worker_address,
        simulate_gpus=settings.simulate_gpus,
        connect_timeout=settings.connect_timeout,
        runtime=settings.worker_runtime,
        local=not remote,
    )


def _local_url(settings: Settings) -> str:
    host = settings.host
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.port}"


def _banner(console: Console, settings: Settings, url: str, opened: Opened) -> None:
    base = _local_url(settings)
    console.print(f"[bold green]MaaS-Base[/] control plane at [bold]{base}[/]")
    console.print(f"  API docs:  {base}/api/docs")
    console.print(f"  OpenAI-compatible API: {base}/v1 (Authorization: Bearer <API key>)")
    console.print(f"  data dir:  {settings.data_dir}")
    kind = "embedded PostgreSQL" if not settings.database_url else "external"
    console.print(f"  database:  {kind} ({redact(normalize_url(url))})")
    boot = opened.bootstrap
    if boot.admin_created and boot.admin_password_file is not None:
        console.print(
            f"  first start: user [bold]admin[/] created; its password is in "
            f"[bold]{boot.admin_password_file}[/]"
        )
    elif boot.admin_created:
        console.print("  first start: user [bold]admin[/] created with the bootstrap password")
    console.print(f"  worker registration token: {boot.token_file}")


async def deploy_catalog(opened: Opened, names: list[str], console: Console) -> None:
    """Deploy catalog models by name, unless a model of that name exists already."""
    from maasbase.server import catalog, model_service
    from maasbase.server.db import models as models_db

    state = opened.state
    for name in names:
        entry = catalog.find(name)
        async with state.sessions() as session:
            if await models_db.get_by_name(session, entry.name) is not None:
                console.print(f"  model [bold]{entry.name}[/] is deployed already")
                continue
            spec = entry.spec()
            await model_service.create_model(
                session, state, name=entry.name, spec=spec, description=entry.description
            )
        console.print(
            f"  deploying [bold]{entry.name}[/] from {spec.source.describe()}; "
            f"follow it with: maas-base model show {entry.name}"
        )


async def serve(settings: Settings, console: Console, *, deploy: list[str] | None = None) -> None:
    """``maas-base start``: control plane, and a local worker unless ``no_worker``."""
    if deploy:
        from maasbase.server import catalog

        for name in deploy:
            catalog.find(name).source()  # fail before starting anything
    stop = asyncio.Event()
    with stop_on_signals(stop):
        sock = bind(settings.host, settings.port, what="MaaS-Base", flag="--port")
        try:
            async with Database(settings) as url:
                opened = await open_server(settings, url)
                try:
                    if deploy:
                        await deploy_catalog(opened, deploy, console)
                    await _run_control_plane(settings, console, url, opened, sock, stop)
                finally:
                    await close_server(opened.state)
        finally:
            sock.close()
    console.print("MaaS-Base stopped.")


def gateway_path(path: str) -> bool:
    """Whether ``combine`` sends a request for ``path`` to the gateway."""
    return path == "/v1" or path.startswith("/v1/")


def combine(server_app: ASGIApp, gateway_app: ASGIApp) -> ASGIApp:
    """One port: ``/v1/*`` goes to the gateway, everything else (and the lifespan) to the
    control plane."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and gateway_path(scope.get("path", "")):
            await gateway_app(scope, receive, send)
        else:
            await server_app(scope, receive, send)

    return app


def local_gateway(settings: Settings, opened: Opened) -> GatewayApp:
    from maasbase.gateway.limits_redis import RedisLimitStore

    state = opened.state
    return create_gateway_app(
        routes=LocalRoutes(state),
        keys=LocalKeys(state),
        usage=LocalUsage(state),
        key_changes=LocalKeyChanges(state),
        limits=RedisLimitStore.from_url(settings.redis_url) if settings.redis_url else None,
    )


async def _run_control_plane(
    settings: Settings,
    console: Console,
    url: str,
    opened: Opened,
    sock: socket.socket,
    stop: asyncio.Event,
) -> None:
    gateway = local_gateway(settings, opened)
    app = combine(create_app(opened.state), gateway)
    server = make_server(
        app,
        log_level=settings.log_level,
        limit_concurrency=gateway.config.max_connections,
        trusted_proxies=settings.trusted_proxies,
    )
    await gateway.start()
    try:
        await _serve_until_stopped(settings, console, url, opened, sock, stop, server)
    finally:
        await gateway.aclose()


async def _serve_until_stopped(
    settings: Settings,
    console: Console,
    url: str,
    opened: Opened,
    sock: socket.socket,
    stop: asyncio.Event,
    server: EmbeddedServer,
) -> None:
    async with asyncio.TaskGroup() as group:
        # The socket already listens, so the local worker may connect before uvicorn
        # accepts: its requests wait in the backlog.
        serving = group.create_task(server.serve(sockets=[sock]), name="http server")
        _banner(console, settings, url, opened)
        if not settings.no_worker:
            token = (settings.data_dir / TOKEN_FILE).read_text().strip()
            config = worker_config(settings, server_url=_local_url(settings), token=token)
            group.create_task(WorkerAgent(config).run(stop), name="local worker")
        stopping = group.create_task(stop.wait())
        await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stop.set()
        opened.state.begin_shutdown()
        server.should_exit = True


async def run_worker(settings: Settings, console: Console) -> None:
    """``maas-base worker`` (or ``start --server-url``): a worker joining a server."""
    assert settings.server_url is not None
    token = settings.token.get_secret_value() if settings.token else None
    config = worker_config(settings, server_url=settings.server_url, token=token)
    stop = asyncio.Event()
    with stop_on_signals(stop):
        agent = WorkerAgent(config)
        runner = asyncio.create_task(agent.run(stop))
        registered = asyncio.create_task(agent.registered.wait())
        await asyncio.wait({runner, registered}, return_when=asyncio.FIRST_COMPLETED)
        if agent.registered.is_set():
            console.print(
                f"[bold green]worker {config.name}[/] joined {config.server_url} "
                f"(worker API on {config.host}:{config.port})"
            )
        else:
            registered.cancel()
        await runner
    console.print("worker stopped.")
