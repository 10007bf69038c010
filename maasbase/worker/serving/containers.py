"""Engines in containers (Docker or Podman through the Docker SDK).

The container spec comes from ``maasbase.backends.container`` (image per backend
version, GPU device requests, model mounted read-only, labels naming the instance);
the container's output is copied into the instance's log file so logs work the same
as for local processes. An engine on the host network binds the host's loopback; one in
its own network namespace binds all of that namespace's addresses and is published on
the host's loopback only.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from maasbase.backends.container import ContainerInfo, DockerRuntime, build_container_run_kwargs
from maasbase.backends.definition import BackendDefinition
from maasbase.backends.launch import LaunchSpec, Runtime
from maasbase.common.errors import MaasError
from maasbase.worker.serving.runner import LOOPBACK, ProcessHandle

logger = logging.getLogger(__name__)

LOG_POLL_SECONDS = 1.0


class ContainerEngine(Protocol):
    """What the runner needs from a container engine (``DockerRuntime`` provides it)."""

    def ping(self) -> None: ...
    def run(self, run_kwargs: dict[str, object]) -> str: ...
    def stop(self, container_id: str, *, timeout: float = 10.0) -> None: ...
    def remove(self, container_id: str, *, force: bool = False) -> None: ...
    def list(self, instance_id: str | None = None) -> list[ContainerInfo]: ...
    def logs(self, container_id: str, *, tail: int | None = 200) -> str: ...


class ContainerRunner:
    runtime = Runtime.CONTAINER

    def __init__(self, engine: ContainerEngine | None = None) -> None:
        self.engine: ContainerEngine = engine or DockerRuntime()
        self.engine.ping()  # no engine reachable: a clear error before anything starts
        self._copiers: dict[str, threading.Event] = {}

    def listen_host(self, definition: BackendDefinition) -> str:
        # In a bridge network, the published port reaches the container's own interface.
        return LOOPBACK if definition.container.host_network else "0.0.0.0"

    def start(
        self, spec: LaunchSpec, definition: BackendDefinition, instance_id: int, log_path: Path
    ) -> ProcessHandle:
        kwargs = build_container_run_kwargs(spec, definition, instance_id=str(instance_id))
        container_id = self.engine.run(kwargs)
        stop = threading.Event()
        self._copiers[container_id] = stop
        threading.Thread(
            target=self._copy_logs, args=(container_id, log_path, stop), daemon=True
        ).start()
        return ProcessHandle(pid=0, create_time=time.time(), container_id=container_id)

    def _status(self, handle: ProcessHandle) -> str | None:
        for info in self.engine.list():
            if info.id == handle.container_id or info.id.startswith(handle.container_id or "-"):
                return info.status
        return None

    def exit_code(self, handle: ProcessHandle) -> int | None:
        try:
            status = self._status(handle)
        except MaasError as exc:
            logger.warning("cannot read container state: %s", exc.message)
            return None  # engine hiccup: do not declare the instance dead
        if status in ("running", "created", "restarting"):
            return None
        return -1

    def stop(self, handle: ProcessHandle, grace: float) -> None:
        assert handle.container_id is not None
        copier = self._copiers.pop(handle.container_id, None)
        if copier is not None:
            copier.set()
        try:
            self.engine.stop(handle.container_id, timeout=grace)
        except MaasError as exc:
            logger.info("container %s: %s", handle.container_id[:12], exc.message)
        try:
            self.engine.remove(handle.container_id, force=True)
        except MaasError as exc:
            logger.info("container %s: %s", handle.container_id[:12], exc.message)

    def _copy_logs(self, container_id: str, log_path: Path, stop: threading.Event) -> None:
        """Append the container's new output to the log file until stopped."""
        written = 0
        log_path.parent.mkdir(parents=True, exist_ok=True)
        while not stop.wait(LOG_POLL_SECONDS):
            try:
                text = self.engine.logs(container_id, tail=None)
            except MaasError:
                continue
            for chunk in _new_part(text, written):
                with log_path.open("a", encoding="utf-8") as log:
                    log.write(chunk)
            written = len(text)


def _new_part(text: str, written: int) -> Iterator[str]:
    if len(text) > written:
        yield text[written:]
