"""The gateway on its own, in front of a remote control plane, for scale-out.

``run_gateway`` serves the gateway app with its own HTTP server (``server.GatewayServer``;
run it on uvloop, as ``main`` does) and talks to the server over HTTP: routing watch,
key checks, credential-change watch and usage batches, all with the gateway's own
credential (``identity``: the registration token is exchanged for one at start). Usage
waits on disk (``<data dir>/gateway-usage``) until the server took it, so a restart loses
none. SIGINT/SIGTERM stop it gracefully. With ``workers`` > 1 it registers once, then
starts that many gateway processes with the credential, each on its own ``SO_REUSEPORT``
socket on the same port (the kernel spreads connections across them), and stops them when
it is cancelled.

``python -m maasbase.gateway.standalone --server-url URL [--token T | $MAAS_GATEWAY_TOKEN]
[--name NAME] [--data-dir DIR]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gc
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import uvicorn

from maasbase.common.config import default_data_dir
from maasbase.common.errors import ConfigurationError
from maasbase.gateway.app import create_gateway_app
from maasbase.gateway.asgi import ASGIApp
from maasbase.gateway.auth import HttpKeyResolver
from maasbase.gateway.config import GatewayConfig
from maasbase.gateway.control import ControlPlaneClient
from maasbase.gateway.identity import obtain_credential
from maasbase.gateway.key_changes import HttpKeyChangeSource
from maasbase.gateway.limits import LimitStore
from maasbase.gateway.metering import HttpUsageSink
from maasbase.gateway.routing import HttpRoutingSource
from maasbase.gateway.server import GatewayServer

logger = logging.getLogger("maasbase.gateway.standalone")

TOKEN_ENV = "MAAS_GATEWAY_TOKEN"
SPOOL_FOLDER = "gateway-usage"


def with_spool(config: GatewayConfig | None, data_dir: Path | None) -> GatewayConfig:
    """``config`` with its usage spool under ``data_dir`` (default: the per-user data
    folder), unless it names one already."""
    config = config or GatewayConfig()
    if config.usage_spool is not None:
        return config
    folder = (data_dir or default_data_dir()).expanduser() / SPOOL_FOLDER
    return dataclasses.replace(config, usage_spool=folder)


def reuse_port_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # asyncio sets TCP_NODELAY
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigurationError(
            f"the gateway cannot listen on {host}:{port} ({exc.strerror}); pick another --port"
        ) from exc
    sock.listen(4096)
    return sock


def settle_garbage_collector() -> None:
    """Move everything allocated so far (modules, the app) out of the collector's reach:
    full collections then scan only what requests allocate, which keeps their pauses
    (tens of ms over a whole heap) out of the latency tail."""
    gc.collect()
    gc.freeze()


def server_config(app: ASGIApp, **overrides: Any) -> uvicorn.Config:
    """uvicorn settings for the gateway as an ASGI app (tests, comparisons): httptools,
    no access log, no proxy-header middleware or default headers on the hot path, long
    client keep-alive."""
    settings: dict[str, Any] = {
        "http": "httptools",
        "lifespan": "on",
        "access_log": False,
        "log_config": None,
        "log_level": "warning",
        "server_header": False,
        "date_header": False,
        "proxy_headers": False,
        "timeout_keep_alive": 75,
        "limit_concurrency": GatewayConfig.max_connections,  # then 503 and close
        "timeout_graceful_shutdown": 30,  # then streams still open are cut
        "backlog": 4096,
    }
    return uvicorn.Config(app, **(settings | overrides))


async def serve(
    server_url: str,
    token: str,
    sock: socket.socket,
    *,
    redis_url: str | None = None,
    config: GatewayConfig | None = None,
    name: str | None = None,
    data_dir: Path | None = None,
) -> None:
    """One gateway process serving on ``sock`` until SIGINT/SIGTERM or cancellation;
    ``token`` is the registration token or the gateway's credential."""
    control = ControlPlaneClient(server_url, token)
    try:
        credential = await obtain_credential(control, token, name=name, data_dir=data_dir)
        control.use_credential(credential)
        limits: LimitStore | None = None
        if redis_url:
            from maasbase.gateway.limits_redis import RedisLimitStore

            limits = RedisLimitStore.from_url(redis_url)
        app = create_gateway_app(
            routes=HttpRoutingSource(server_url, credential, client=control),
            keys=HttpKeyResolver(server_url, credential, client=control),
            usage=HttpUsageSink(server_url, credential, client=control),
            limits=limits,
            config=config,
            key_changes=HttpKeyChangeSource(control),
        )
        server = GatewayServer(app)
        settle_garbage_collector()
        with stop_on_signals(server.stop):
            await server.serve(sock)
    finally:
        await control.aclose()


async def credential_for_children(
    server_url: str, token: str, *, name: str | None, data_dir: Path | None
) -> str:
    """Register once on behalf of all gateway processes on this port."""
    control = ControlPlaneClient(server_url, token)
    try:
        return await obtain_credential(control, token, name=name, data_dir=data_dir)
    finally:
        await control.aclose()


@contextlib.contextmanager
def stop_on_signals(stop: Callable[[], None]) -> Iterator[None]:
    """SIGINT and SIGTERM call ``stop`` (when this is the main thread's loop)."""
    loop = asyncio.get_running_loop()
    installed = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, stop)
        except (NotImplementedError, RuntimeError, ValueError):
            continue  # not the main thread: the owner of the loop handles signals
        installed.append(signum)
    try:
        yield
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)


async def _supervise(argv: list[str], env: dict[str, str], workers: int) -> None:
    """Run ``workers`` gateway processes until SIGINT/SIGTERM (or cancellation), then stop
    them; one exiting on its own stops the others and raises."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    children: list[asyncio.subprocess.Process] = []
    waits: list[asyncio.Task[int]] = []
    try:
        for _ in range(workers):
            children.append(await asyncio.create_subprocess_exec(sys.executable, *argv, env=env))
        waits = [loop.create_task(child.wait()) for child in children]
        stopping = loop.create_task(stop.wait())
        done, _ = await asyncio.wait([*waits, stopping], return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if stopping not in done:
            code = next(task.result() for task in done if task is not stopping)
            raise ConfigurationError(f"a gateway worker exited with status {code}; see its log")
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        for child in children:
            if child.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    child.send_signal(signal.SIGTERM)
        for child in children:
            await child.wait()
        for task in waits:
            task.cancel()


async def run_gateway(
    server_url: str,
    token: str,
    host: str = "0.0.0.0",
    port: int = 8080,
    redis_url: str | None = None,
    workers: int = 1,
    *,
    config: GatewayConfig | None = None,
    name: str | None = None,
    data_dir: Path | None = None,
) -> None:
    """Serve the gateway on ``host:port`` in front of the server at ``server_url``;
    ``token`` is the registration token or a gateway credential (``mbg_...``); the
    credential and usage not yet sent are kept under ``data_dir``."""
    if workers < 1:
        raise ConfigurationError("--workers must be at least 1")
    if workers == 1:
        sock = reuse_port_socket(host, port)
        try:
            config = with_spool(config, data_dir)
            await serve(
                server_url, token, sock, redis_url=redis_url, config=config, name=name,
                data_dir=data_dir,
            )  # fmt: skip
        finally:
            sock.close()
        return
    reuse_port_socket(host, port).close()  # a busy port is a clear error before any start
    credential = await credential_for_children(server_url, token, name=name, data_dir=data_dir)
    argv = ["-m", "maasbase.gateway.standalone", "--server-url", server_url,
            "--host", host, "--port", str(port)]  # fmt: skip
    if redis_url:
        argv += ["--redis-url", redis_url]
    if data_dir is not None:
        argv += ["--data-dir", str(data_dir)]
    await _supervise(argv, {**os.environ, TOKEN_ENV: credential}, workers)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m maasbase.gateway.standalone")
    parser.add_argument("--server-url", required=True)
    parser.add_argument("--token", default=os.environ.get(TOKEN_ENV))
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--redis-url")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--name", help="gateway name [default: host name]")
    parser.add_argument(
        "--data-dir", type=Path,
        help="keeps the gateway's credential and usage not yet sent [usage: per-user data folder]",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if not args.token:
        parser.error(f"--token or ${TOKEN_ENV} is required")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    coroutine = run_gateway(
        args.server_url, args.token, args.host, args.port, args.redis_url, args.workers,
        name=args.name, data_dir=args.data_dir,
    )  # fmt: skip
    try:
        import uvloop
    except ImportError:
        asyncio.run(coroutine)
    else:
        uvloop.run(coroutine)


if __name__ == "__main__":
    main()
