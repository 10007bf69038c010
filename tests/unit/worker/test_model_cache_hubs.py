"""Hub downloads against local fake hubs served over real HTTP, each with a CDN on a
second origin that honours HTTP Range.

Hugging Face (through huggingface_hub 2.x): ``GET /api/models/{repo}/revision/{rev}``
(``?blobs=true``: siblings with sizes and LFS hashes), ``HEAD``/``GET
/{repo}/resolve/{rev}/{path}`` (``X-Repo-Commit``, ``ETag``; weights answer ``302`` to the
CDN with ``X-Linked-Etag``/``X-Linked-Size``); errors carry the hub's ``X-Error-Code``.
ModelScope: ``/api/v1/models/{repo}/repo/files`` listing and ``/api/v1/models/{repo}/repo``
downloads redirected to the CDN.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from huggingface_hub import constants as hf_constants

from maasbase.common.instances import DownloadProgress, ModelSource, SourceType
from maasbase.worker.models import (
    HubSettings,
    InsufficientDiskSpace,
    ModelAccessDenied,
    ModelCache,
    ModelHubUnavailable,
    ModelSourceNotFound,
    modelscope,
)
from maasbase.worker.models.disk import Usage
from tests.support.fake_hubs import (
    TOKEN,
    FakeHuggingFace,
    FakeModelScope,
    Repo,
    blob,
    running,
    serving,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def hf() -> Iterator[FakeHuggingFace]:
    fake = FakeHuggingFace()
    with running(fake):
        yield fake


@pytest.fixture
def ms() -> Iterator[FakeModelScope]:
    fake = FakeModelScope()
    with running(fake):
        yield fake


@pytest.fixture
async def make_cache(
    tmp_path: Path, hf: FakeHuggingFace, ms: FakeModelScope
) -> AsyncIterator[Callable[..., ModelCache]]:
    caches: list[ModelCache] = []

    def make(root: Path | None = None, **options: Any) -> ModelCache:
        tokens = {k: options.pop(k) for k in ("hf_token", "modelscope_token") if k in options}
        settings = HubSettings(hf_endpoint=hf.endpoint, modelscope_endpoint=ms.endpoint, **tokens)
        cache = ModelCache(
            root or tmp_path / "models", settings=settings, progress_interval=0.01, **options
        )
        caches.append(cache)
        return cache

    yield make
    for cache in caches:
        await cache.aclose()


def hf_source(repo_id: str, file: str | None = None) -> ModelSource:
    return ModelSource(type=SourceType.HUGGINGFACE, repo_id=repo_id, file=file)


def ms_source(repo_id: str, file: str | None = None) -> ModelSource:
    return ModelSource(type=SourceType.MODELSCOPE, repo_id=repo_id, file=file)


GGUF_Q4 = blob(1, 200_000)
GGUF_Q8 = blob(2, 150_000)
GGUF_REPO = Repo({"tiny-Q4_K_M.gguf": GGUF_Q4, "tiny-Q8_0.gguf": GGUF_Q8, "README.md": b"# tiny"})
SHARDS = {f"model-0000{i}-of-00002.safetensors": blob(10 + i, 60_000) for i in (1, 2)}
SAFETENSORS_REPO = Repo({"config.json": b'{"model_type": "llama"}', **SHARDS, "README.md": b"#"})


def assert_progress_reaches(updates: list[DownloadProgress], total: int) -> None:
    assert updates, "no progress reported"
    assert updates[-1] == DownloadProgress(bytes_done=total, bytes_total=total)
    done = [u.bytes_done for u in updates]
    assert done == sorted(done)
    assert {u.bytes_total for u in updates} == {total}


async def test_one_gguf_file_by_glob_with_progress_to_100_percent(
    hf: FakeHuggingFace, make_cache: Callable[..., ModelCache]
) -> None:
    hf.repos["org/tiny-GGUF"] = GGUF_REPO
    updates: list[DownloadProgress] = []

    path = await make_cache().ensure(
        hf_source("org/tiny-GGUF", "*Q4_K_M.gguf"), progress=updates.append
    )

    assert path.name == "tiny-Q4_K_M.gguf"
    assert path.read_bytes() == GGUF_Q4
    assert_progress_reaches(updates, len(GGUF_Q4))
    assert len(hf.cdn_gets(GGUF_Q4)) == 1
    assert hf.cdn_gets(GGUF_Q8) == []


async def test_glob_of_several_files_gives_their_folder_and_a_second_call_only_lists(
    hf: FakeHuggingFace, make_cache: Callable[..., ModelCache]
) -> None:
    hf.repos["org/tiny-llama"] = SAFETENSORS_REPO
    cache = make_cache()

    folder = await cache.ensure(hf_source("org/tiny-llama", "*.safetensors"))

    assert folder.is_dir()
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == SHARDS
    before = len(hf.seen)
    assert await cache.ensure(hf_source("org/tiny-llama", "*.safetensors")) == folder
    assert [(s.method, s.path) for s in hf.seen[before:]] == [
        ("GET", "/api/models/org/tiny-llama/revision/main")
    ]


async def test_whole_repository_when_no_file_is_named(
    hf: FakeHuggingFace, make_cache: Callable[..., ModelCache]
) -> None:
    hf.repos["org/tiny-llama"] = SAFETENSORS_REPO

    folder = await make_cache().ensure(hf_source("org/tiny-llama"))

    assert sorted(p.name for p in folder.iterdir()) == sorted(SAFETENSORS_REPO.files)


async def test_interrupted_transfer_resumes_with_a_range_request(
    hf: FakeHuggingFace, make_cache: Callable[..., ModelCache], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hf_constants, "DOWNLOAD_CHUNK_SIZE", 16 * 1024)  # small test files
    hf.repos["org/tiny-GGUF"] = GGUF_REPO
    cut = 64 * 1024
    hf.cut_after[f"/cdn/{hashlib.sha256(GGUF_Q4).hexdigest()}"] = cut
    updates: list[DownloadProgress] = []

    path = await make_cache().ensure(
        hf_source("org/tiny-GGUF", "tiny-Q4_K_M.gguf"), progress=updates.append
    )

    first, second = hf.cdn_gets(GGUF_Q4)
    assert "Range" not in first.headers
    assert second.headers["Range"] == f"bytes={cut}-"
    assert path.read_bytes() == GGUF_Q4
    assert_progress_reaches(updates, len(GGUF_Q4))


async def test_concurrent_callers_share_one_download(
    hf: FakeHuggingFace, make_cache: Callable[..., ModelCache]
) -> None:
    hf.repos["org/tiny-GGUF"] = GGUF_REPO
    hf.cdn_delay = 0.3
    cache = make_cache()
    first: list[DownloadProgress] = []
    second: list[DownloadProgress] = []
    source = hf_source("org/tiny-GGUF", "*Q4_K_M.gguf")

    paths = await asyncio.gather(
        cache.ensure(source, progress=first.append), cache.ensure(source, progress=second.append)
    )

    assert paths[0] == paths[1]
    assert len(hf.cdn_gets(GGUF_Q4)) == 1
    assert_progress_reaches(first, len(GGUF_Q4))
    assert_progress_reaches(second, len(GGUF_Q4))


async def test_two_processes_sharing_a_cache_folder_download_once(
    hf: FakeHuggingFace, make_cache: Callable[..., ModelCache], tmp_path: Path
) -> None:
    hf.repos["org/tiny-GGUF"] = GGUF_REPO
    hf.cdn_delay = 0.3
    shared = tmp_path / "shared"
    source = hf_source("org/tiny-GGUF", "*Q8_0.gguf")

    paths = await asyncio.gather(
        make_cache(shared).ensure(source), make_cache(shared).ensure(source)
    )

    assert paths[0] == paths[1]
    assert len(hf.cdn_gets(GGUF_Q8)) == 1


async def test_free_space_is_checked_before_downloading(
    hf: FakeHuggingFace, make_cache: Callable[..., ModelCache], tmp_path: Path
) -> None:
    hf.repos["org/tiny-GGUF"] = GGUF_REPO
    cache = make_cache(disk_usage=lambda path: Usage(10**12, 10**12 - 4096, 4096))

    with pytest.raises(InsufficientDiskSpace) as caught:
        await cache.ensure(hf_source("org/tiny-GGUF", "*Q4_K_M.gguf"))

    message = caught.value.message
    assert f"needs 256.2 MiB in {tmp_path / 'models'}, 4.0 KiB free" in message
    assert "--data-dir" in message
    assert hf.cdn_gets(GGUF_Q4) == []


async def test_unknown_repository_revision_and_file_are_not_found(
    hf: FakeHuggingFace, make_cache: Callable[..., ModelCache]
) -> None:
    hf.repos["org/tiny-GGUF"] = Repo(dict(GGUF_REPO.files), missing={"tiny-Q8_0.gguf"})
    cache = make_cache()

    with pytest.raises(ModelSourceNotFound, match="org/nope"):
        await cache.ensure(hf_source("org/nope"))
    with pytest.raises(ModelSourceNotFound, match="revision"):
        await cache.ensure(
            ModelSource(type=SourceType.HUGGINGFACE, repo_id="org/tiny-GGUF", revision="v9")
        )
    with pytest.raises(ModelSourceNotFound, match=r"Q5_K_M.*tiny-Q4_K_M\.gguf"):
        await cache.ensure(hf_source("org/tiny-GGUF", "*Q5_K_M.gguf"))
    with pytest.raises(ModelSourceNotFound, match=r"tiny-Q8_0\.gguf") as caught:
        await cache.ensure(hf_source("org/tiny-GGUF", "tiny-Q8_0.gguf"))
    assert not caught.value.retryable


async def test_private_repository_needs_the_token_which_is_never_shown(
    hf: FakeHuggingFace, make_cache: Callable[..., ModelCache], caplog: pytest.LogCaptureFixture
) -> None:
    hf.repos["org/private"] = Repo({"w.gguf": GGUF_Q8}, token=TOKEN)

    with pytest.raises(ModelAccessDenied, match="token") as caught:
        await make_cache().ensure(hf_source("org/private", "w.gguf"))
    assert not caught.value.retryable
    path = await make_cache(hf_token=TOKEN).ensure(hf_source("org/private", "w.gguf"))

    assert path.read_bytes() == GGUF_Q8
    assert "authorization" not in {k.lower() for k in hf.cdn_gets(GGUF_Q8)[0].headers}
    assert TOKEN not in caplog.text
    assert TOKEN not in str(caught.value)


async def test_gated_repository_says_so(
    hf: FakeHuggingFace, make_cache: Callable[..., ModelCache], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HF_TOKEN", raising=False)
    hf.repos["org/gated"] = Repo({"w.gguf": GGUF_Q8}, gated=True)

    with pytest.raises(ModelAccessDenied, match="gated"):
        await make_cache().ensure(hf_source("org/gated", "w.gguf"))


async def test_hub_outage_is_retryable_but_cached_models_still_start(
    hf: FakeHuggingFace, make_cache: Callable[..., ModelCache]
) -> None:
    hf.repos["org/tiny-GGUF"] = GGUF_REPO
    cache = make_cache()
    path = await cache.ensure(hf_source("org/tiny-GGUF", "*Q4_K_M.gguf"))
    hf.api_status = 503

    assert await cache.ensure(hf_source("org/tiny-GGUF", "*Q4_K_M.gguf")) == path
    with pytest.raises(ModelHubUnavailable) as caught:
        await cache.ensure(hf_source("org/tiny-llama"))
    assert caught.value.retryable


async def test_unreachable_hub_is_retryable(tmp_path: Path) -> None:
    with serving(lambda handler, method: None) as endpoint:
        pass  # the port is closed again
    settings = HubSettings(hf_endpoint=endpoint, modelscope_endpoint=endpoint)
    async with ModelCache(tmp_path, settings=settings) as cache:
        with pytest.raises(ModelHubUnavailable, match="cannot"):
            await cache.ensure(hf_source("org/tiny-GGUF"))
        with pytest.raises(ModelHubUnavailable, match="cannot reach ModelScope"):
            await cache.ensure(ms_source("org/tiny-GGUF"))


# ModelScope


async def test_modelscope_download_sends_the_token_and_follows_the_cdn_redirect(
    ms: FakeModelScope, make_cache: Callable[..., ModelCache]
) -> None:
    ms.repos["org/tiny-GGUF"] = Repo(dict(GGUF_REPO.files), token=TOKEN)
    updates: list[DownloadProgress] = []
    cache = make_cache(modelscope_token=TOKEN)

    path = await cache.ensure(ms_source("org/tiny-GGUF", "*Q4_K_M.gguf"), progress=updates.append)

    assert path.read_bytes() == GGUF_Q4
    assert path.name == "tiny-Q4_K_M.gguf"
    assert_progress_reaches(updates, len(GGUF_Q4))
    listing = ms.seen[0]
    assert listing.headers["Authorization"] == f"Bearer {TOKEN}"
    assert f"m_session_id={TOKEN}" in listing.headers["Cookie"]
    assert "Authorization" not in ms.cdn_gets(GGUF_Q4)[0].headers
    with pytest.raises(ModelAccessDenied, match="MODELSCOPE_API_TOKEN"):
        await make_cache().ensure(ms_source("org/tiny-GGUF", "*Q4_K_M.gguf"))


async def test_modelscope_resumes_the_partial_file_of_an_earlier_run(
    ms: FakeModelScope, make_cache: Callable[..., ModelCache], tmp_path: Path
) -> None:
    ms.repos["org/tiny-GGUF"] = GGUF_REPO
    partial = tmp_path / "models/modelscope/org/tiny-GGUF/master/tiny-Q4_K_M.gguf.incomplete"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(GGUF_Q4[:50_000])
    updates: list[DownloadProgress] = []

    path = await make_cache().ensure(
        ms_source("org/tiny-GGUF", "tiny-Q4_K_M.gguf"), progress=updates.append
    )

    (get,) = ms.cdn_gets(GGUF_Q4)
    assert get.headers["Range"] == "bytes=50000-"
    assert path.read_bytes() == GGUF_Q4
    assert not partial.exists()
    assert updates[0].bytes_done >= 50_000


async def test_modelscope_resumes_within_a_call_after_a_cut(
    ms: FakeModelScope, make_cache: Callable[..., ModelCache], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(modelscope, "RETRY_DELAY_SECONDS", 0.01)
    ms.repos["org/tiny-GGUF"] = GGUF_REPO
    ms.cut_after[f"/cdn/{hashlib.sha256(GGUF_Q8).hexdigest()}"] = 70_000

    path = await make_cache().ensure(ms_source("org/tiny-GGUF", "*Q8_0.gguf"))

    first, second = ms.cdn_gets(GGUF_Q8)
    assert "Range" not in first.headers
    assert second.headers["Range"] == "bytes=70000-"
    assert path.read_bytes() == GGUF_Q8


async def test_modelscope_checksum_mismatch_keeps_nothing_and_is_retryable(
    ms: FakeModelScope, make_cache: Callable[..., ModelCache], tmp_path: Path
) -> None:
    ms.repos["org/tiny-GGUF"] = GGUF_REPO
    ms.wrong_sha256.add("tiny-Q8_0.gguf")

    with pytest.raises(ModelHubUnavailable, match="SHA-256") as caught:
        await make_cache().ensure(ms_source("org/tiny-GGUF", "tiny-Q8_0.gguf"))

    assert caught.value.retryable
    folder = tmp_path / "models/modelscope/org/tiny-GGUF/master"
    assert list(folder.iterdir()) == []


async def test_modelscope_unknown_repository_and_outage(
    ms: FakeModelScope, make_cache: Callable[..., ModelCache]
) -> None:
    cache = make_cache()
    with pytest.raises(ModelSourceNotFound, match="org/nope"):
        await cache.ensure(ms_source("org/nope"))
    ms.api_status = 502
    with pytest.raises(ModelHubUnavailable, match="502"):
        await cache.ensure(ms_source("org/nope"))
