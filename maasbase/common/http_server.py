"""Running uvicorn inside a larger process: pre-bound sockets, no signal handling of its own.

The command that owns the process installs the signal handlers and tells each
server to stop; uvicorn must not install (and later re-raise) its own.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Generator, Sequence
from typing import Any

import uvicorn

from maasbase.common.errors import ConfigurationError

GRACEFUL_SHUTDOWN_SECONDS = 3


class EmbeddedServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def bind(host: str, port: int, *, what: str, flag: str) -> socket.socket:
    """Bind a listening socket now, so a busy port is a clear error before anything starts."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY on accepted connections only for
    # such sockets; without it every keep-alive response waits for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigurationError(
            f"{what} cannot listen on {host}:{port} ({exc.strerror}); "
            f"is another process using it? Pick another with {flag}"
        ) from exc
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def make_server(
    app: Any,
    *,
    log_level: str = "warning",
    limit_concurrency: int | None = None,
    trusted_proxies: Sequence[str] = (),
) -> EmbeddedServer:
    """uvicorn for ``app``; past ``limit_concurrency`` connections (or running requests)
    it answers 503 and closes. Its keep-alive timeout is uvicorn's 5 s.

    ``trusted_proxies``: the peers (addresses or CIDR networks) whose X-Forwarded-For
    and X-Forwarded-Proto headers are believed. With none (the default), the client
    address is always the socket's: a client cannot choose the address that login
    throttling counts by sending the header itself."""
    config = uvicorn.Config(
        app,
        log_config=None,
        log_level=log_level,
        access_log=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        lifespan="on",
        limit_concurrency=limit_concurrency,
        proxy_headers=bool(trusted_proxies),
        forwarded_allow_ips=list(trusted_proxies) or None,
    )
    return EmbeddedServer(config)
