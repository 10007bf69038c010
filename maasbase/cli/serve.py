"""Run the control plane: database (embedded or external) → server app → HTTP, and stop cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import Generator
from dataclasses import dataclass

import uvicorn
from rich.console import Console

from maasbase.common.config import Settings
from maasbase.common.errors import ConfigurationError
from maasbase.server.app import create_app
from maasbase.server.db.engine import normalize_url, redact
from maasbase.server.embedded_db import EmbeddedPostgres
from maasbase.server.runtime import Opened, close_server, open_server

logger = logging.getLogger(__name__)

GRACEFUL_SHUTDOWN_SECONDS = 3


class _Server(uvicorn.Server):
    """uvicorn server whose signal handling stops it without re-raising the signal afterwards,
    so the database and child processes are stopped by our own ``finally`` blocks."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        originals = {
            sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            yield
        finally:
            for sig, handler in originals.items():
                signal.signal(sig, handler)


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


def _banner(console: Console, settings: Settings, url: str, opened: Opened) -> None:
    base = f"http://{settings.host}:{settings.port}"
    console.print(f"[bold green]MaaS-Base[/] control plane at [bold]{base}[/]")
    console.print(f"  API docs:  {base}/api/docs")
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


async def serve(settings: Settings, console: Console) -> None:
    async with Database(settings) as url:
        opened = await open_server(settings, url)
        try:
            app = create_app(opened.state)
            config = uvicorn.Config(
                app,
                host=settings.host,
                port=settings.port,
                log_config=None,
                access_log=False,
                timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
                lifespan="on",
            )
            server = _Server(config)
            _banner(console, settings, url, opened)
            try:
                await server.serve()
            except SystemExit as exc:  # uvicorn exits when it cannot bind
                raise ConfigurationError(
                    f"could not listen on {settings.host}:{settings.port}; "
                    "is the port in use? Pick another with --port"
                ) from exc
        finally:
            await close_server(opened.state)
    console.print("MaaS-Base stopped.")
