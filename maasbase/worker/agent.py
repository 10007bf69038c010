"""The worker agent: detect hardware, register, serve the worker API, heartbeat.

The worker API's port also carries the data-plane proxy (``dataplane``), the only way
in to the engines, which listen on loopback.

Registration uses the worker's stored credential when it has one (re-attaching to
its record), else the registration token. Before the first registration succeeds,
an unreachable server is retried for ``connect_timeout`` seconds and then reported as
an error; afterwards, outages are ridden out with capped backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from maasbase import __version__
from maasbase.common.errors import ConfigurationError
from maasbase.common.hardware import HardwareReport
from maasbase.common.http_server import bind, make_server
from maasbase.common.instances import InstanceReport
from maasbase.common.workers import WorkerRegistration
from maasbase.worker import identity as identity_store
from maasbase.worker.api import create_worker_app
from maasbase.worker.client import CredentialRefused, ServerClient, ServerUnreachable
from maasbase.worker.dataplane import DataPlane
from maasbase.worker.hardware import detect_hardware
from maasbase.worker.models import ModelCache
from maasbase.worker.reporting import ReportQueue
from maasbase.worker.serving.containers import ContainerRunner
from maasbase.worker.serving.manager import ServingManager
from maasbase.worker.serving.runner import LocalProcessRunner

logger = logging.getLogger(__name__)

MAX_BACKOFF_SECONDS = 30.0
WATCH_WAIT_SECONDS = 25.0


@dataclass
class WorkerConfig:
    server_url: str
    data_dir: Path
    name: str
    token: str | None
    labels: dict[str, str] = field(default_factory=dict)
    host: str = "0.0.0.0"
    port: int = 10150
    address: str | None = None
    simulate_gpus: str | None = None
    connect_timeout: float = 30.0
    runtime: str = "process"  # or "container"
    # Runs inside ``maas-base start``: its stored identity belongs to this server whatever
    # URL the server now has (a worker name is registered once; see ``register``).
    local: bool = False

    @property
    def worker_dir(self) -> Path:
        return self.data_dir / "worker"


def route_address(server_url: str) -> str:
    """The local address the OS uses to reach the server (what the server should call back)."""
    parts = urlsplit(server_url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect((host, port))
            address: str = probe.getsockname()[0]
            return address
    except OSError:
        return socket.gethostname()


class WorkerAgent:
    def __init__(self, config: WorkerConfig, client: ServerClient | None = None) -> None:
        self.config = config
        self.client = client or ServerClient(config.server_url)
        self.identity = identity_store.load(config.worker_dir)
        if (
            self.identity is not None
            and self.identity.server_url != self.client.server_url
            and not config.local
        ):
            logger.info("stored identity is for %s; registering anew", self.identity.server_url)
            self.identity = None
        self.hardware: HardwareReport | None = None
        self.heartbeat_interval = 5.0
        self.registered = asyncio.Event()
        self.cache = ModelCache(config.data_dir / "models")
        self.reports = ReportQueue(self._send_reports)
        self.serving = ServingManager(
            config.worker_dir,
            fetch=lambda a, progress: self.cache.ensure(a.source, progress=progress),
            report=self.reports.put,
            runner=ContainerRunner() if config.runtime == "container" else LocalProcessRunner(),
        )

    async def _send_reports(self, reports: list[InstanceReport]) -> None:
        assert self.identity is not None
        await self.client.report(self.identity.credential, reports)

    def _detect(self) -> HardwareReport:
        return detect_hardware(
            self.config.data_dir,
            simulate=self.config.simulate_gpus,
            worker_name=self.config.name,
        )

    def _registration(self) -> WorkerRegistration:
        assert self.hardware is not None
        return WorkerRegistration(
            name=self.config.name,
            labels=self.config.labels,
            hardware=self.hardware,
            address=self.config.address or route_address(self.client.server_url),
            port=self.config.port,
            version=__version__,
        )

    async def register(self) -> None:
        """Register once: stored credential first, then the registration token."""
        registration = self._registration()
        attempts: list[str] = []
        if self.identity is not None and self.identity.name == self.config.name:
            attempts.append(self.identity.credential)
        if self.config.token:
            attempts.append(self.config.token)
        if not attempts:
            raise ConfigurationError(
                "this worker has no stored credential; pass the registration token with "
                "--token (it is in the server's <data-dir>/token)"
            )
        for n, bearer in enumerate(attempts):
            try:
                result = await self.client.register(registration, bearer)
            except CredentialRefused:
                if n + 1 < len(attempts):
                    logger.info("stored credential refused; registering with the token")
                    continue
                raise
            self.identity = identity_store.WorkerIdentity(
                server_url=self.client.server_url,
                worker_id=result.id,
                name=result.name,
                credential=result.credential,
                api_secret=result.api_secret,
                data_plane_secret=result.data_plane_secret,
            )
            identity_store.save(self.config.worker_dir, self.identity)
            self.heartbeat_interval = result.heartbeat_interval
            logger.info("registered as worker %s (id %d)", result.name, result.id)
            self.registered.set()
            return

    async def _first_registration(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.connect_timeout
        delay = 0.5
        while True:
            try:
                await self.register()
                return
            except ServerUnreachable as exc:
                if loop.time() + delay > deadline:
                    raise ServerUnreachable(
                        f"{exc.message} (gave up after {self.config.connect_timeout:.0f} s)"
                    ) from exc
                logger.warning("%s; retrying in %.1f s", exc.message, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _heartbeats(self, stop: asyncio.Event) -> None:
        delay = self.heartbeat_interval
        while not stop.is_set():
            try:
                self.hardware = await asyncio.to_thread(self._detect)
                assert self.identity is not None
                ack = await self.client.heartbeat(self.identity.credential, self.hardware)
                self.heartbeat_interval = ack.heartbeat_interval
                delay = self.heartbeat_interval
            except ServerUnreachable as exc:
                delay = min(MAX_BACKOFF_SECONDS, max(self.heartbeat_interval, delay * 2))
                logger.warning("heartbeat failed: %s; next try in %.0f s", exc.message, delay)
            except CredentialRefused as exc:
                logger.warning("server refused this worker's credential: %s", exc.message)
                await self.register()  # raises when no token is at hand
                delay = 0.0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)

    async def _watch_assignments(self, stop: asyncio.Event) -> None:
        """Follow the server's list of instances for this worker (long-poll) and apply it."""
        revision: str | None = None
        delay = 1.0
        while not stop.is_set():
            try:
                assert self.identity is not None
                assignments = await self.client.assignments(
                    self.identity.credential, revision, WATCH_WAIT_SECONDS
                )
                delay = 1.0
            except (ServerUnreachable, CredentialRefused) as exc:
                # Heartbeats handle re-registration; keep serving what runs meanwhile.
                logger.warning("assignment watch failed: %s; retrying in %.0f s", exc.message,
                               delay)  # fmt: skip
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=delay)
                delay = min(MAX_BACKOFF_SECONDS, delay * 2)
                continue
            if assignments.revision != revision:
                await self.serving.apply(assignments)
                revision = assignments.revision

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set. Raises on a wrong token or an unreachable server."""
        sock = bind(self.config.host, self.config.port, what="the worker API", flag="--worker-port")
        try:
            self.hardware = await asyncio.to_thread(self._detect)
            await self._first_registration()
            app = create_worker_app(
                lambda: self.identity.api_secret if self.identity else None,
                lambda: self.hardware,
                self.serving.log_of,
            )
            dataplane = DataPlane(
                app,
                secret=lambda: self.identity.data_plane_secret if self.identity else None,
                port_of=self.serving.port_of,
            )
            api = make_server(dataplane)
            try:
                async with asyncio.TaskGroup() as group:
                    group.create_task(api.serve(sockets=[sock]), name="worker api")
                    beats = group.create_task(self._heartbeats(stop), name="heartbeats")
                    watch = group.create_task(self._watch_assignments(stop), name="assignments")
                    group.create_task(self.reports.run(stop), name="reports")
                    stopped = group.create_task(stop.wait())
                    await asyncio.wait({beats, watch, stopped}, return_when=asyncio.FIRST_COMPLETED)
                    stop.set()
                    watch.cancel()
                    api.should_exit = True
            finally:
                await self.serving.stop_all()
                await dataplane.aclose()
        finally:
            sock.close()
            await self.cache.aclose()
            await self.client.aclose()
