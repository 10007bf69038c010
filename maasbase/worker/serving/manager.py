"""Reconcile the instances a worker is assigned with the inference servers it runs.

For each assignment: fetch the model files (progress reported), pick a port, build the
launch spec from the backend definition, start the engine in its own process group
listening on loopback only (the worker's data-plane proxy is the way in; ``port_of``),
wait for its health path, report ``running``, then watch it; an exit is reported as
``error`` with the log tail (the server decides when to restart, by raising
``restart_count``). Instances no longer assigned are stopped (SIGTERM, then SIGKILL for
the whole group). Servers started by an earlier run of the worker are adopted when
still assigned unchanged, and stopped otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from maasbase.backends.definition import BackendDefinition, ModelCategory, Vendor
from maasbase.backends.launch import LaunchContext, LaunchSpec, build_launch_spec
from maasbase.backends.registry import BackendRegistry
from maasbase.common.errors import MaasError
from maasbase.common.instances import (
    DownloadProgress,
    InstanceAssignment,
    InstanceReport,
    InstanceState,
    WorkerAssignments,
)
from maasbase.worker.models.convert import needs_conversion, prepare_for_backend
from maasbase.worker.serving import logs
from maasbase.worker.serving.context_probe import engine_context
from maasbase.worker.serving.ports import PortAllocator
from maasbase.worker.serving.records import RecordStore, RunRecord
from maasbase.worker.serving.runner import LocalProcessRunner, ProcessHandle, ProcessRunner

logger = logging.getLogger(__name__)

Reporter = Callable[[InstanceReport], None]
Progress = Callable[[DownloadProgress], None]
Fetcher = Callable[[InstanceAssignment, Progress], Awaitable[Path]]

STOP_GRACE_SECONDS = 10.0
WATCH_SECONDS = 1.0
LOG_TAIL_LINES = 30


def write_spec_files(files: dict[str, str]) -> None:
    """Write each launch file atomically (temporary file, then rename), mode 0640."""
    for name, text in files.items():
        path = Path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(text)
            os.chmod(tmp, 0o640)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def assignment_key(assignment: InstanceAssignment) -> str:
    return hashlib.sha256(assignment.model_dump_json().encode()).hexdigest()[:16]


@dataclass
class Run:
    assignment: InstanceAssignment
    key: str
    task: asyncio.Task[None] | None = None
    handle: ProcessHandle | None = None
    port: int | None = None
    adopted: bool = False
    log_path: Path = field(default_factory=Path)


class ServingManager:
    def __init__(
        self,
        worker_dir: Path,
        *,
        fetch: Fetcher,
        report: Reporter,
        registry: BackendRegistry | None = None,
        runner: ProcessRunner | None = None,
        ports: PortAllocator | None = None,
        health_host: str = "127.0.0.1",
    ) -> None:
        self.worker_dir = worker_dir
        self.fetch = fetch
        self.report = report
        self.registry = registry or BackendRegistry.default()
        self.runner = runner or LocalProcessRunner()
        self.ports = ports or PortAllocator()
        self.health_host = health_host
        self.records = RecordStore(worker_dir / "instances")
        self.runs: dict[int, Run] = {}
        self._adoptable: dict[int, RunRecord] = {r.instance_id: r for r in self.records.load_all()}

    def log_path(self, name: str) -> Path:
        return self.worker_dir / "logs" / f"{name}.log"

    def log_of(self, instance_id: int) -> Path | None:
        run = self.runs.get(instance_id)
        return run.log_path if run else None

    def port_of(self, instance_id: int) -> int | None:
        """The engine port of an instance this worker runs (for the data-plane proxy)."""
        run = self.runs.get(instance_id)
        return run.port if run else None

    # -- reconcile ---------------------------------------------------------------------

    async def apply(self, assignments: WorkerAssignments) -> None:
        desired = {a.instance_id: a for a in assignments.instances}
        for instance_id in list(self.runs):
            run = self.runs[instance_id]
            wanted = desired.get(instance_id)
            if wanted is None or assignment_key(wanted) != run.key:
                await self._stop(instance_id)
        await self._settle_adoptable(desired)
        for instance_id, assignment in desired.items():
            if instance_id not in self.runs:
                self._start(assignment)

    async def _settle_adoptable(self, desired: dict[int, InstanceAssignment]) -> None:
        """Adopt servers of an earlier worker run that are still wanted unchanged; stop the
        rest. Runs once, on the first assignment list."""
        pending, self._adoptable = self._adoptable, {}
        for instance_id, record in pending.items():
            handle = ProcessHandle(record.pid, record.create_time, record.container_id)
            wanted = desired.get(instance_id)
            alive = self.runner.exit_code(handle) is None
            if alive and wanted is not None and assignment_key(wanted) == record.assignment_key:
                run = Run(wanted, record.assignment_key, handle=handle, port=record.port,
                          adopted=True, log_path=self.log_path(wanted.name))  # fmt: skip
                self.ports.claim(record.port)
                self.runs[instance_id] = run
                run.task = asyncio.create_task(self._watch_adopted(run))
                logger.info("adopted running server of instance %s (pid %d)", wanted.name,
                            record.pid)  # fmt: skip
                continue
            if alive:
                logger.info("stopping orphaned server pid %d (instance %d)", record.pid,
                            instance_id)  # fmt: skip
                await asyncio.to_thread(self.runner.stop, handle, STOP_GRACE_SECONDS)
            self.records.remove(instance_id)

    def _start(self, assignment: InstanceAssignment) -> None:
        run = Run(assignment, assignment_key(assignment), log_path=self.log_path(assignment.name))
        self.runs[assignment.instance_id] = run
        run.task = asyncio.create_task(self._run(run), name=f"instance {assignment.name}")

    async def _stop(self, instance_id: int) -> None:
        run = self.runs.pop(instance_id, None)
        if run is None:
            return
        if run.task is not None:
            run.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await run.task
        if run.handle is not None:
            await asyncio.to_thread(self.runner.stop, run.handle, STOP_GRACE_SECONDS)
        if run.port is not None:
            self.ports.release(run.port)
        self.records.remove(instance_id)
        logger.info("stopped instance %s", run.assignment.name)

    async def stop_all(self) -> None:
        await asyncio.gather(*(self._stop(i) for i in list(self.runs)))

    # -- one instance ------------------------------------------------------------------

    def _send(self, run: Run, state: InstanceState, message: str = "", **extra: object) -> None:
        self.report(
            InstanceReport(
                instance_id=run.assignment.instance_id,
                restart_count=run.assignment.restart_count,
                state=state,
                message=message,
                port=run.port,
                pid=run.handle.pid if run.handle else None,
                **extra,
            )
        )

    async def _run(self, run: Run) -> None:
        a = run.assignment
        try:
            self._send(run, InstanceState.DOWNLOADING, f"fetching {a.source.describe()}")

            def progress(p: DownloadProgress) -> None:
                pct = f"{p.percent:.0f}% of " if p.percent is not None else ""
                self._send(run, InstanceState.DOWNLOADING, f"downloading: {pct}"
                           f"{a.source.describe()}", download=p)  # fmt: skip

            model_path = await self.fetch(a, progress)
            if needs_conversion(model_path, a.backend):
                self._send(run, InstanceState.DOWNLOADING, f"converting {model_path.name} to GGUF")
                model_path = await asyncio.to_thread(
                    prepare_for_backend, model_path, a.backend, self.worker_dir / "converted"
                )
            run.port = self.ports.allocate()
            spec = self._spec(a, model_path, run.port)
            definition = self._definition(a)
            await asyncio.to_thread(write_spec_files, spec.files)
            run.handle = await asyncio.to_thread(
                self.runner.start, spec, definition, a.instance_id, run.log_path
            )
            record = RunRecord(
                instance_id=a.instance_id,
                restart_count=a.restart_count,
                assignment_key=run.key,
                pid=run.handle.pid,
                create_time=run.handle.create_time,
                container_id=run.handle.container_id,
                port=run.port,
            )
            self.records.save(record)
            self._send(run, InstanceState.STARTING, f"{spec.backend} starting on port {run.port}")
            await self._wait_healthy(run, spec)
            context = await engine_context(f"http://{self.health_host}:{spec.port}")
            self._send(run, InstanceState.RUNNING, f"{spec.backend} serving on port {run.port}",
                       context_length=context)  # fmt: skip
            await self._watch(run)
        except asyncio.CancelledError:
            raise
        except MaasError as exc:
            await self._fail(run, exc.message)
        except Exception as exc:  # the worker must survive any one instance's failure
            logger.exception("instance %s failed", a.name)
            await self._fail(run, f"{type(exc).__name__}: {exc}")

    def _definition(self, a: InstanceAssignment) -> BackendDefinition:
        registry = self.registry
        if a.backend_definition is not None:
            registry = BackendRegistry.default(user=[a.backend_definition])
        return registry.get(a.backend)

    def _spec(self, a: InstanceAssignment, model_path: Path, port: int) -> LaunchSpec:
        definition = self._definition(a)
        categories = set(a.categories)
        category = (
            ModelCategory.EMBEDDING
            if "embedding" in categories
            else (ModelCategory.RERANKER if "reranker" in categories else ModelCategory.LLM)
        )
        context = LaunchContext(
            model_path=str(model_path),
            model_name=a.model_name,
            host=self.runner.listen_host(definition),
            port=port,
            vendor=Vendor(a.gpu_vendor) if a.gpu_vendor else Vendor.CPU,
            gpu_ids=list(a.gpu_indexes),
            tp_size=a.tensor_parallel_size if a.gpu_indexes else None,
            category=category,
            backend_parameters=list(a.backend_parameters),
            env=dict(a.env),
            data_dir=str(self._data_dir(a)),
            runtime=self.runner.runtime,
        )
        return build_launch_spec(definition, context, version=a.backend_version)

    def _data_dir(self, a: InstanceAssignment) -> Path:
        folder = self.worker_dir / "runs" / a.name
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    async def _wait_healthy(self, run: Run, spec: LaunchSpec) -> None:
        assert run.handle is not None
        url = f"http://{self.health_host}:{spec.port}{spec.health_path}"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + spec.ready_timeout
        async with httpx.AsyncClient(timeout=2.0) as client:
            while True:
                code = self.runner.exit_code(run.handle)
                if code is not None:
                    raise _EngineExited(f"{spec.backend} exited with code {code} while starting")
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(url)).status_code == 200:
                        return
                if loop.time() > deadline:
                    raise _EngineExited(
                        f"{spec.backend} not healthy at {spec.health_path} after "
                        f"{spec.ready_timeout:.0f} s"
                    )
                await asyncio.sleep(0.25)

    async def _watch(self, run: Run) -> None:
        assert run.handle is not None
        while True:
            code = self.runner.exit_code(run.handle)
            if code is not None:
                await self._fail(run, f"engine exited with code {code}")
                return
            await asyncio.sleep(WATCH_SECONDS)

    async def _watch_adopted(self, run: Run) -> None:
        context = None
        if run.port is not None:
            context = await engine_context(f"http://{self.health_host}:{run.port}")
        self._send(run, InstanceState.RUNNING, f"serving on port {run.port} (adopted)",
                   context_length=context)  # fmt: skip
        await self._watch(run)

    async def _fail(self, run: Run, message: str) -> None:
        if run.handle is not None:
            # The engine may have left children behind in its process group.
            await asyncio.to_thread(self.runner.stop, run.handle, 2.0)
        if run.port is not None:
            self.ports.release(run.port)
        self.records.remove(run.assignment.instance_id)
        self._send(run, InstanceState.ERROR, message,
                   log_tail=logs.tail(run.log_path, LOG_TAIL_LINES) or None)  # fmt: skip


class _EngineExited(MaasError):
    code = "engine_exited"
