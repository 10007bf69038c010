"""The worker's model file cache: one download per file, shared by every instance.

``ModelCache.ensure(source)`` returns the local path an engine loads. For a hub source
it lists the repository, picks the files the source names, checks free disk space,
downloads what is missing (each file under an asyncio lock in this process and an
``flock`` shared with other processes using the same cache folder) and reports
progress. A caller that finds a file already being downloaded waits for it and sees
its progress. When the hub is unreachable, the listing saved by an earlier success is
used, so cached models still start offline.

Layout under ``root``: ``huggingface/`` (``huggingface_hub``'s cache layout),
``modelscope/``, ``manifests/`` (saved listings) and ``.locks/``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Self, TypeVar

from maasbase.common.instances import DownloadProgress, ModelSource, SourceType

from . import disk
from .errors import (
    DownloadCancelled,
    ModelAccessDenied,
    ModelHubUnavailable,
    ModelSourceNotFound,
)
from .hub import HuggingFaceHub
from .locks import KeyedLocks, file_lock, lock_path
from .modelscope import ModelScopeHub
from .selection import entry_point, folder_of, missing_bytes, select_files
from .types import HubSettings, ModelHub, RemoteFile, Snapshot

logger = logging.getLogger(__name__)
_T = TypeVar("_T")

ProgressCallback = Callable[[DownloadProgress], None]
MAX_PARALLEL_DOWNLOADS = 8  # per cache, across all callers
MAX_PARALLEL_FILES = 4  # per ensure() call
PROGRESS_INTERVAL_SECONDS = 0.25


class ModelCache:
    """Model files of one worker under ``root``.

    ``settings`` gives hub endpoints and tokens (default: the hubs' environment
    variables); ``hubs`` replaces hub clients (tests, other hubs); ``disk_usage`` reports
    free space; progress callbacks run on the event loop every ``progress_interval``
    seconds while bytes move. Close with ``aclose()`` or ``async with``.
    """

    def __init__(
        self,
        root: Path,
        *,
        settings: HubSettings | None = None,
        hubs: Mapping[SourceType, ModelHub] | None = None,
        disk_usage: disk.DiskUsage = disk.disk_usage,
        progress_interval: float = PROGRESS_INTERVAL_SECONDS,
    ) -> None:
        self.root = root
        settings = settings or HubSettings.from_env()
        self._hubs: dict[SourceType, ModelHub] = {
            SourceType.HUGGINGFACE: HuggingFaceHub(
                root / "huggingface", endpoint=settings.hf_endpoint, token=settings.hf_token
            ),
            SourceType.MODELSCOPE: ModelScopeHub(
                root / "modelscope",
                endpoint=settings.modelscope_endpoint,
                token=settings.modelscope_token,
            ),
            **(hubs or {}),
        }
        self._disk_usage = disk_usage
        self._progress_interval = progress_interval
        self._locks = KeyedLocks()
        self._in_flight: dict[str, int] = {}  # file key -> bytes present, written by threads
        self._cancels: set[threading.Event] = set()
        self._executor = ThreadPoolExecutor(MAX_PARALLEL_DOWNLOADS, "model-download")

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop running downloads and wait for their threads (ModelScope partial files
        stay and resume later)."""
        for cancel in list(self._cancels):
            cancel.set()
        await asyncio.to_thread(self._executor.shutdown, wait=True, cancel_futures=True)

    async def ensure(
        self, source: ModelSource, *, progress: ProgressCallback | None = None
    ) -> Path:
        """The local path of ``source``'s model: a file, or a folder for several files."""
        if source.type is SourceType.LOCAL_PATH:
            return await asyncio.to_thread(local_model_path, source)
        hub = self._hubs[source.type]
        snapshot = await self._snapshot(hub, source)
        what = f"{source.type.value} {snapshot.repo_id}@{snapshot.revision}"
        files = select_files(snapshot.files, source.file, what=what)
        cached, present = await asyncio.to_thread(_survey, hub, snapshot, files)
        missing = missing_bytes((f.size, present[f.path]) for f in files if not cached[f.path])
        if missing:
            usage = await asyncio.to_thread(self._free_space)
            disk.check_free_space(missing, usage.free, self.root)
            logger.info("downloading %s of %s", disk.format_bytes(missing), source.describe())
        tracker = _Tracker(hub.name, snapshot, files, cached, present)
        reporter = (
            asyncio.create_task(self._report(tracker, progress)) if progress is not None else None
        )
        try:
            paths = await self._fetch_all(hub, snapshot, files, cached, tracker)
        finally:
            if reporter is not None:
                reporter.cancel()
                await asyncio.wait([reporter])
        if progress is not None:
            _safe_call(progress, tracker.progress({}))
        return entry_point(folder_of(paths[0], files[0].path), files, source.file)

    def _free_space(self) -> disk.Usage:
        self.root.mkdir(parents=True, exist_ok=True)
        return self._disk_usage(self.root)

    async def _snapshot(self, hub: ModelHub, source: ModelSource) -> Snapshot:
        assert source.repo_id is not None  # ModelSource validates hub sources
        manifest = self._manifest_path(source)
        try:
            snapshot = await asyncio.to_thread(hub.snapshot, source.repo_id, source.revision)
        except ModelHubUnavailable as exc:
            saved = await asyncio.to_thread(_load_manifest, manifest)
            if saved is None:
                raise
            logger.warning("%s; using the listing saved for %s", exc.message, source.describe())
            return saved
        await asyncio.to_thread(_save_manifest, manifest, snapshot)
        return snapshot

    async def _fetch_all(
        self,
        hub: ModelHub,
        snapshot: Snapshot,
        files: Sequence[RemoteFile],
        cached: Mapping[str, Path | None],
        tracker: _Tracker,
    ) -> list[Path]:
        limit = asyncio.Semaphore(MAX_PARALLEL_FILES)

        async def fetch(file: RemoteFile) -> Path:
            found = cached[file.path]
            if found is not None:
                return found
            async with limit:
                return await self._fetch_one(hub, snapshot, file, tracker)

        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(fetch(f)) for f in files]
        except BaseExceptionGroup as errors:
            first = _first_error(errors)
            raise first from first.__cause__
        return [t.result() for t in tasks]

    async def _fetch_one(
        self, hub: ModelHub, snapshot: Snapshot, file: RemoteFile, tracker: _Tracker
    ) -> Path:
        key = tracker.key(file)
        in_flight = self._in_flight
        lock_file = lock_path(self.root / ".locks", key)

        def work(cancel: threading.Event) -> Path:
            with file_lock(lock_file, cancel):
                found = hub.cached(snapshot, file)
                if found is not None:
                    return found  # another caller or process finished it meanwhile
                in_flight[key] = hub.partial_bytes(snapshot, file)
                try:
                    return hub.download(snapshot, file, partial(in_flight.__setitem__, key), cancel)
                finally:
                    in_flight.pop(key, None)

        async with self._locks.hold(key):
            path = await self._run_cancellable(work)
        tracker.complete(file)
        return path

    async def _run_cancellable(self, work: Callable[[threading.Event], _T]) -> _T:
        """Run ``work`` in a download thread; on cancellation, tell it and wait for it."""
        cancel = threading.Event()
        self._cancels.add(cancel)
        future = asyncio.get_running_loop().run_in_executor(self._executor, work, cancel)
        future.add_done_callback(lambda f: f.cancelled() or f.exception())  # always retrieved
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            cancel.set()
            await asyncio.wait([future])
            raise
        except DownloadCancelled as exc:  # aclose() stopped it
            raise ModelHubUnavailable(
                "the download stopped because the worker's model cache is closing; "
                "it is retried when the worker runs again"
            ) from exc
        finally:
            self._cancels.discard(cancel)

    async def _report(self, tracker: _Tracker, progress: ProgressCallback) -> None:
        last = None
        while True:
            current = tracker.progress(self._in_flight)
            if current != last:
                _safe_call(progress, current)
                last = current
            await asyncio.sleep(self._progress_interval)

    def _manifest_path(self, source: ModelSource) -> Path:
        key = f"{source.repo_id}@{source.revision or ''}"
        digest = hashlib.sha256(key.encode()).hexdigest()[:32]
        return self.root / "manifests" / f"{source.type.value}-{digest}.json"


class _Tracker:
    """Bytes present per file of one ``ensure`` call; never goes backwards."""

    def __init__(
        self,
        hub_name: str,
        snapshot: Snapshot,
        files: Sequence[RemoteFile],
        cached: Mapping[str, Path | None],
        present: Mapping[str, int],
    ) -> None:
        self._prefix = f"{hub_name}|{snapshot.repo_id}|{snapshot.commit}|"
        self._sizes = {self.key(f): f.size for f in files}
        self._done = {
            self.key(f): (f.size or 0) if cached[f.path] else present[f.path] for f in files
        }
        sizes = self._sizes.values()
        self._total = None if None in sizes else sum(s for s in sizes if s is not None)

    def key(self, file: RemoteFile) -> str:
        return self._prefix + file.path

    def complete(self, file: RemoteFile) -> None:
        key = self.key(file)
        self._done[key] = max(self._done[key], self._sizes[key] or 0)

    def progress(self, in_flight: Mapping[str, int]) -> DownloadProgress:
        for key, done in self._done.items():
            self._done[key] = max(done, in_flight.get(key, 0))
        done_bytes = sum(self._done.values())
        if self._total is not None:
            done_bytes = min(done_bytes, self._total)
        return DownloadProgress(bytes_done=done_bytes, bytes_total=self._total)


def local_model_path(source: ModelSource) -> Path:
    """A local source, checked: the path itself, or the file ``source.file`` picks in it."""
    assert source.path is not None  # ModelSource validates local sources
    path = Path(source.path).expanduser().absolute()
    if not path.exists():
        raise ModelSourceNotFound(
            f"local model path {path} does not exist on this worker; copy the model there "
            "or fix the path"
        )
    is_dir = path.is_dir()
    if not os.access(path, os.R_OK | (os.X_OK if is_dir else 0)):
        raise ModelAccessDenied(
            f"local model path {path} is not readable by the worker; fix its permissions"
        )
    if not (is_dir and source.file):
        return path
    files = [
        RemoteFile(p.relative_to(path).as_posix(), p.stat().st_size)
        for p in sorted(path.rglob("*"))
        if p.is_file()
    ]
    chosen = select_files(files, source.file, what=f"local path {path}")
    return entry_point(path, chosen, source.file)


def _survey(
    hub: ModelHub, snapshot: Snapshot, files: Sequence[RemoteFile]
) -> tuple[dict[str, Path | None], dict[str, int]]:
    cached = {f.path: hub.cached(snapshot, f) for f in files}
    present = {f.path: 0 if cached[f.path] else hub.partial_bytes(snapshot, f) for f in files}
    return cached, present


def _save_manifest(path: Path, snapshot: Snapshot) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    temporary.write_text(json.dumps(snapshot.to_json()))
    os.replace(temporary, path)


def _load_manifest(path: Path) -> Snapshot | None:
    try:
        return Snapshot.from_json(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first real failure in a task group (not a sibling's cancellation)."""
    leaves: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending:
        error = pending.pop(0)
        if isinstance(error, BaseExceptionGroup):
            pending[:0] = list(error.exceptions)
        else:
            leaves.append(error)
    real = [e for e in leaves if not isinstance(e, asyncio.CancelledError)]
    return (real or leaves)[0]


def _safe_call(progress: ProgressCallback, value: DownloadProgress) -> None:
    try:
        progress(value)
    except Exception:
        logger.exception("a download progress callback failed")
