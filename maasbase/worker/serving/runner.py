"""The process seam: start engines in their own process group, stop the whole group.

Every engine gets a new session (``start_new_session``), so SIGTERM/SIGKILL reach the
engine and everything it spawned. Processes from an earlier run of the worker are
recognised by pid *and* start time, so a reused pid is never mistaken for an engine.
Engines start with a clean environment (``backends.engine_env``), not the worker's.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import psutil

from maasbase.backends.definition import BackendDefinition
from maasbase.backends.engine_env import engine_environment
from maasbase.backends.launch import LaunchSpec, Runtime

logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class ProcessHandle:
    """A running engine: a local process group, or a container (``container_id``)."""

    pid: int
    create_time: float
    container_id: str | None = None


class ProcessRunner(Protocol):
    runtime: Runtime

    def listen_host(self, definition: BackendDefinition) -> str:
        """The address the engine binds, as seen by the engine: loopback on the host."""
        ...

    def start(
        self, spec: LaunchSpec, definition: BackendDefinition, instance_id: int, log_path: Path
    ) -> ProcessHandle: ...

    def exit_code(self, handle: ProcessHandle) -> int | None:
        """None while the process runs; its exit code (or -1 if unknown) once it ended."""
        ...

    def stop(self, handle: ProcessHandle, grace: float) -> None:
        """SIGTERM the process group, SIGKILL it after ``grace`` seconds. Blocks."""
        ...


class LocalProcessRunner:
    runtime = Runtime.PROCESS

    def __init__(self) -> None:
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    def listen_host(self, definition: BackendDefinition) -> str:
        return LOOPBACK

    def start(
        self, spec: LaunchSpec, definition: BackendDefinition, instance_id: int, log_path: Path
    ) -> ProcessHandle:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            # argv comes from a backend definition, never through a shell.
            proc = subprocess.Popen(  # noqa: S603
                [*spec.executable, *spec.args],
                env=engine_environment(os.environ, spec.env),
                cwd=spec.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._children[proc.pid] = proc
        try:
            created = psutil.Process(proc.pid).create_time()
        except psutil.Error:
            created = time.time()
        return ProcessHandle(pid=proc.pid, create_time=created)

    def _same_process(self, handle: ProcessHandle) -> psutil.Process | None:
        try:
            proc = psutil.Process(handle.pid)
            if abs(proc.create_time() - handle.create_time) > 1.0:
                return None
            if proc.status() == psutil.STATUS_ZOMBIE:
                return None
            return proc
        except psutil.Error:
            return None

    def exit_code(self, handle: ProcessHandle) -> int | None:
        child = self._children.get(handle.pid)
        if child is not None:
            code = child.poll()
            if code is not None:
                self._children.pop(handle.pid, None)
            return code
        return None if self._same_process(handle) is not None else -1

    def stop(self, handle: ProcessHandle, grace: float) -> None:
        if self._same_process(handle) is None:
            self._reap(handle)
            return
        self._signal_group(handle, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if self.exit_code(handle) is not None and not self._group_alive(handle):
                self._reap(handle)
                return
            time.sleep(0.1)
        logger.warning("process %d ignored SIGTERM for %.0f s; killing it", handle.pid, grace)
        self._signal_group(handle, signal.SIGKILL)
        self._reap(handle)

    def _signal_group(self, handle: ProcessHandle, sig: signal.Signals) -> None:
        try:
            os.killpg(handle.pid, sig)
        except ProcessLookupError:
            pass
        except PermissionError:
            logger.warning("not allowed to signal process group %d", handle.pid)

    def _group_alive(self, handle: ProcessHandle) -> bool:
        try:
            os.killpg(handle.pid, 0)
            return True
        except (ProcessLookupError, PermissionError):
            return False

    def _reap(self, handle: ProcessHandle) -> None:
        child = self._children.pop(handle.pid, None)
        if child is not None:
            try:
                child.wait(timeout=5)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
