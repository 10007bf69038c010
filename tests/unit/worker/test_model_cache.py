"""The model cache without a network: file selection, disk space, local paths, locks,
cancellation and offline starts (through an in-memory hub behind the ``ModelHub`` seam)."""

from __future__ import annotations

import asyncio
import io
import logging
import threading
from pathlib import Path

import pytest
from rich.console import Console

from maasbase.common.instances import DownloadProgress, ModelSource, SourceType
from maasbase.worker.models import (
    HubSettings,
    InsufficientDiskSpace,
    InvalidModelSource,
    ModelAccessDenied,
    ModelCache,
    ModelHubUnavailable,
    ModelSourceNotFound,
    RemoteFile,
    Snapshot,
    check_free_space,
    format_bytes,
    local_model_path,
)
from maasbase.worker.models import cache as cache_module
from maasbase.worker.models.errors import DownloadCancelled
from maasbase.worker.models.locks import KeyedLocks, file_lock
from maasbase.worker.models.progress import DownloadProgressBar, summarize
from maasbase.worker.models.selection import entry_point, safe_relative, select_files
from maasbase.worker.models.types import ByteCallback

GIB = 1024**3


def files(*names: str) -> list[RemoteFile]:
    return [RemoteFile(name, 10) for name in names]


def paths(chosen: tuple[RemoteFile, ...]) -> list[str]:
    return [f.path for f in chosen]


REPO = files("README.md", "m-Q4_K_M.gguf", "m-Q8_0.gguf", "sub/m-Q4_K_M.gguf", "config.json")
SPLIT = files("a.gguf", "big-Q4-00001-of-00002.gguf", "big-Q4-00002-of-00002.gguf")


def test_exact_name_glob_and_whole_repository() -> None:
    assert paths(select_files(REPO, "m-Q8_0.gguf", what="r")) == ["m-Q8_0.gguf"]
    assert paths(select_files(REPO, "*Q4_K_M.gguf", what="r")) == [
        "m-Q4_K_M.gguf",
        "sub/m-Q4_K_M.gguf",
    ]
    assert paths(select_files(REPO, None, what="r")) == [f.path for f in REPO]


def test_no_match_lists_what_the_repository_has() -> None:
    with pytest.raises(ModelSourceNotFound, match=r"no file of org/m matches '\*Q5\*'.*README"):
        select_files(REPO, "*Q5*", what="org/m")


def test_one_shard_of_a_split_gguf_brings_its_siblings_and_loads_from_the_first() -> None:
    chosen = select_files(SPLIT, "big-Q4-00002-of-00002.gguf", what="r")
    assert paths(chosen) == ["big-Q4-00001-of-00002.gguf", "big-Q4-00002-of-00002.gguf"]
    assert entry_point(Path("/m"), chosen, "big*") == Path("/m/big-Q4-00001-of-00002.gguf")


def test_entry_point_is_the_file_or_the_folder() -> None:
    folder = Path("/cache/snap")
    assert entry_point(folder, files("a/b.gguf"), "*.gguf") == folder / "a/b.gguf"
    assert entry_point(folder, files("a.gguf", "b.gguf"), "*.gguf") == folder
    assert entry_point(folder, files("config.json"), None) == folder


@pytest.mark.parametrize("path", ["../x", "/etc/passwd", "a//b", "a/./b", "a\\b", ""])
def test_paths_that_escape_the_cache_are_refused(path: str) -> None:
    with pytest.raises(InvalidModelSource):
        safe_relative(path)


def test_free_space_error_says_how_much_where_and_what_to_do() -> None:
    check_free_space(10 * GIB, 11 * GIB, Path("/data"))
    with pytest.raises(InsufficientDiskSpace) as caught:
        check_free_space(int(14.2 * GIB), int(3.1 * GIB), Path("/data/models"), margin=0)
    assert caught.value.message == (
        "the model download needs 14.2 GiB in /data/models, 3.1 GiB free; "
        "free space or point --data-dir elsewhere"
    )
    assert not caught.value.retryable
    assert [format_bytes(n) for n in (512, 1536, 5 * 1024**4)] == ["512 B", "1.5 KiB", "5.0 TiB"]


def test_progress_summary_and_rich_bar() -> None:
    progress = DownloadProgress(bytes_done=int(3.1 * GIB), bytes_total=int(14.2 * GIB))
    assert summarize(progress) == "3.1 GiB of 14.2 GiB (22%)"
    assert summarize(DownloadProgress(bytes_done=2048)) == "2.0 KiB"
    out = io.StringIO()
    with DownloadProgressBar("qwen", console=Console(file=out, width=120)) as bar:
        bar.update(DownloadProgress(bytes_done=512 * 1024, bytes_total=1024 * 1024))
    assert "qwen" in out.getvalue()
    assert "50%" in out.getvalue()


def test_settings_come_from_the_hubs_variables_and_hide_tokens() -> None:
    env = {
        "HF_ENDPOINT": "https://hf-mirror.example/",
        "HF_TOKEN": "hf_x",
        "MODELSCOPE_DOMAIN": "ms.example",
    }
    settings = HubSettings.from_env(env)
    assert settings.hf_endpoint == "https://hf-mirror.example"
    assert settings.modelscope_endpoint == "https://ms.example"
    assert settings.hf_token == "hf_x"
    assert "hf_x" not in repr(settings)
    assert HubSettings.from_env({}) == HubSettings()


def local(path: Path, file: str | None = None) -> ModelSource:
    return ModelSource(type=SourceType.LOCAL_PATH, path=str(path), file=file)


def test_local_paths_are_used_in_place(tmp_path: Path) -> None:
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub/x-Q4.gguf").write_bytes(b"GGUF")
    assert local_model_path(local(model)) == model
    assert local_model_path(local(tmp_path)) == tmp_path
    assert local_model_path(local(tmp_path, "*Q4.gguf")) == tmp_path / "sub/x-Q4.gguf"


def test_missing_local_path_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(ModelSourceNotFound, match="does not exist on this worker"):
        local_model_path(local(tmp_path / "nope.gguf"))


def test_unreadable_local_path_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    monkeypatch.setattr(cache_module.os, "access", lambda path, mode: False)  # root reads all
    with pytest.raises(ModelAccessDenied, match="not readable"):
        local_model_path(local(model))


async def test_keyed_locks_serialize_one_key_and_forget_it() -> None:
    locks = KeyedLocks()
    order: list[str] = []

    async def hold(name: str) -> None:
        async with locks.hold("k"):
            order.append(f"{name}+")
            await asyncio.sleep(0.01)
            order.append(f"{name}-")

    await asyncio.gather(hold("a"), hold("b"))
    assert order == ["a+", "a-", "b+", "b-"]
    assert len(locks) == 0


def test_file_lock_excludes_other_holders_and_a_cancelled_waiter_gives_up(tmp_path: Path) -> None:
    lock = tmp_path / "x.lock"
    cancel = threading.Event()
    failures: list[BaseException] = []

    def wait_for_lock() -> None:
        try:
            with file_lock(lock, cancel):
                pass
        except DownloadCancelled as exc:
            failures.append(exc)

    with file_lock(lock, threading.Event()):
        waiter = threading.Thread(target=wait_for_lock)
        waiter.start()
        cancel.set()
        waiter.join()
    assert len(failures) == 1
    with file_lock(lock, threading.Event()):
        pass  # free again


class MemoryHub:
    """A hub in memory; ``gate`` holds downloads halfway until it is set."""

    name = "memory"

    def __init__(self, root: Path, content: dict[str, bytes]) -> None:
        self.root = root
        self.content = content
        self.gate = threading.Event()
        self.gate.set()
        self.started = threading.Event()
        self.stopped_by_cancel = threading.Event()
        self.down = False

    def snapshot(self, repo_id: str, revision: str | None) -> Snapshot:
        if self.down:
            raise ModelHubUnavailable("memory hub is down")
        listed = tuple(RemoteFile(p, len(d)) for p, d in self.content.items())
        return Snapshot(repo_id, revision or "main", "c1", listed)

    def cached(self, snapshot: Snapshot, file: RemoteFile) -> Path | None:
        path = self.root / snapshot.repo_id / file.path
        return path if path.exists() else None

    def partial_bytes(self, snapshot: Snapshot, file: RemoteFile) -> int:
        return 0

    def download(
        self, snapshot: Snapshot, file: RemoteFile, on_bytes: ByteCallback, cancel: threading.Event
    ) -> Path:
        data = self.content[file.path]
        on_bytes(len(data) // 2)
        self.started.set()
        while not self.gate.wait(0.01):
            if cancel.is_set():
                self.stopped_by_cancel.set()
                raise DownloadCancelled
        path = self.root / snapshot.repo_id / file.path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        on_bytes(len(data))
        return path


@pytest.fixture
def hub(tmp_path: Path) -> MemoryHub:
    return MemoryHub(tmp_path / "hub", {"m.gguf": b"x" * 1000, "other.gguf": b"y" * 10})


def source(file: str = "m.gguf", repo_id: str = "org/m") -> ModelSource:
    return ModelSource(type=SourceType.HUGGINGFACE, repo_id=repo_id, file=file)


async def test_cancelling_a_caller_stops_its_download_thread_first(
    hub: MemoryHub, tmp_path: Path
) -> None:
    hub.gate.clear()
    async with ModelCache(tmp_path, hubs={SourceType.HUGGINGFACE: hub}) as cache:
        task = asyncio.create_task(cache.ensure(source()))
        await asyncio.to_thread(hub.started.wait, 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert hub.stopped_by_cancel.is_set()


async def test_closing_the_cache_stops_downloads_with_a_retryable_error(
    hub: MemoryHub, tmp_path: Path
) -> None:
    hub.gate.clear()
    cache = ModelCache(tmp_path, hubs={SourceType.HUGGINGFACE: hub})
    task = asyncio.create_task(cache.ensure(source()))
    await asyncio.to_thread(hub.started.wait, 5)
    await cache.aclose()
    with pytest.raises(ModelHubUnavailable, match="closing"):
        await task


async def test_a_failing_progress_callback_does_not_stop_the_download(
    hub: MemoryHub, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(progress: DownloadProgress) -> None:
        raise RuntimeError("display gone")

    async with ModelCache(tmp_path, hubs={SourceType.HUGGINGFACE: hub}) as cache:
        path = await cache.ensure(source(), progress=broken)
    assert path.read_bytes() == b"x" * 1000
    assert "progress callback failed" in caplog.text


async def test_cached_model_starts_while_its_hub_is_down(
    hub: MemoryHub, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with ModelCache(tmp_path, hubs={SourceType.HUGGINGFACE: hub}) as cache:
        path = await cache.ensure(source())
        hub.down = True
        with caplog.at_level(logging.WARNING):
            assert await cache.ensure(source()) == path
        assert "using the listing saved" in caplog.text
        with pytest.raises(ModelHubUnavailable):
            await cache.ensure(source(repo_id="org/never-seen"))
