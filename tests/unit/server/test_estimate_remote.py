"""Remote metadata through an in-process fake hub (httpx.MockTransport) with Range support."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import unquote

import httpx
import pytest

from maasbase.server.estimate import (
    HuggingFaceHub,
    ModelFormatError,
    ModelScopeHub,
    RemoteAccessDenied,
    RemoteHubUnavailable,
    RemoteModelNotFound,
    RemoteRequestRejected,
    fetch_remote_metadata,
    read_gguf_metadata,
    read_hf_folder_metadata,
)
from maasbase.server.estimate import remote as remote_module
from tests.support.model_files import LLAMA3_8B, write_llama_folder, write_tiny_gguf


class FakeHub:
    """Serves folders under ``root/{org}/{name}`` the way the Hugging Face Hub and
    ModelScope do: a file listing API, downloads redirected to a CDN host, Range reads."""

    def __init__(self, root: Path, *, token: str | None = None, honour_range: bool = True):
        self.root = root
        self.token = token
        self.honour_range = honour_range
        self.requests: list[httpx.Request] = []
        self.bytes_served = 0
        self.status_override: int | None = None

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.status_override is not None:
            return httpx.Response(self.status_override)
        path = unquote(request.url.path)
        if request.url.host == "cdn.test":
            return self._serve(request, self.root / path.lstrip("/"))
        if self.token and request.headers.get("authorization") != f"Bearer {self.token}":
            return httpx.Response(401, json={"error": "Invalid credentials"})
        if request.url.host == "hub.test":
            return self._hugging_face(path)
        if request.url.host == "ms.test":
            return self._modelscope(request, path)
        return httpx.Response(404)

    def _files(self, repo: str) -> list[tuple[str, int]]:
        folder = self.root / repo
        return [
            (str(p.relative_to(folder)), p.stat().st_size)
            for p in sorted(folder.rglob("*"))
            if p.is_file()
        ]

    def _hugging_face(self, path: str) -> httpx.Response:
        if path.startswith("/api/models/"):
            repo, _, _revision = path.removeprefix("/api/models/").partition("/revision/")
            if not (self.root / repo).is_dir():
                return httpx.Response(404, json={"error": "Repository not found"})
            siblings = [{"rfilename": n, "size": s} for n, s in self._files(repo)]
            return httpx.Response(200, json={"id": repo, "siblings": siblings})
        org, name, _resolve, _revision, filename = path.lstrip("/").split("/", 4)
        return httpx.Response(
            302, headers={"location": f"https://cdn.test/{org}/{name}/{filename}"}
        )

    def _modelscope(self, request: httpx.Request, path: str) -> httpx.Response:
        repo = (
            path.removeprefix("/api/v1/models/").removesuffix("/repo/files").removesuffix("/repo")
        )
        if path.endswith("/repo/files"):
            assert request.url.params["Recursive"] == "true"
            files = [{"Path": n, "Size": s, "Type": "blob"} for n, s in self._files(repo)]
            files.append({"Path": "subdir", "Size": 0, "Type": "tree"})
            return httpx.Response(
                200, json={"Code": 200, "Success": True, "Data": {"Files": files}}
            )
        return self._serve(request, self.root / repo / request.url.params["FilePath"])

    def _serve(self, request: httpx.Request, file: Path) -> httpx.Response:
        assert "authorization" not in request.headers, "token leaked to another host"
        if not file.is_file():
            return httpx.Response(404)
        size = file.stat().st_size
        spec = request.headers.get("range")
        if spec is None or not self.honour_range:
            return httpx.Response(200, content=file.read_bytes())
        start_s, _, end_s = spec.removeprefix("bytes=").partition("-")
        start, end = int(start_s), min(int(end_s), size - 1)
        if start >= size:
            return httpx.Response(416)
        with file.open("rb") as fh:
            fh.seek(start)
            body = fh.read(end - start + 1)
        self.bytes_served += len(body)
        headers = {"content-range": f"bytes {start}-{end}/{size}"}
        return httpx.Response(206, content=body, headers=headers)


@pytest.fixture
def repos(tmp_path: Path) -> Path:
    write_llama_folder(tmp_path / "meta-llama" / "Llama-3-8B", LLAMA3_8B)
    gguf_repo = tmp_path / "org" / "tiny-GGUF"
    gguf_repo.mkdir(parents=True)
    write_tiny_gguf(gguf_repo / "tiny-Q8_0.gguf", vocab=20000)
    (gguf_repo / "mmproj-tiny-f16.gguf").write_bytes(b"GGUF")
    return tmp_path


@pytest.fixture
def fake(repos: Path) -> FakeHub:
    return FakeHub(repos)


@pytest.fixture
async def client(fake: FakeHub) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.MockTransport(fake.handler)) as http:
        yield http


async def test_safetensors_repo_matches_the_local_folder(
    client: httpx.AsyncClient, fake: FakeHub, repos: Path
) -> None:
    hub = HuggingFaceHub(client, endpoint="https://hub.test", token="")

    meta = await fetch_remote_metadata(hub, "meta-llama/Llama-3-8B")

    assert meta == read_hf_folder_metadata(repos / "meta-llama" / "Llama-3-8B")
    assert meta.weight_bytes == 16_060_522_496
    # config.json, the index and a first 64 KiB of each of 4 shards; not 16 GB of weights.
    assert fake.bytes_served < 4 * 64 * 1024 + 64 * 1024


async def test_gguf_header_larger_than_the_first_read_is_fetched_in_steps(
    client: httpx.AsyncClient, fake: FakeHub, repos: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(remote_module, "GGUF_INITIAL_BYTES", 4096)
    hub = HuggingFaceHub(client, endpoint="https://hub.test", token="")
    local = read_gguf_metadata(repos / "org" / "tiny-GGUF" / "tiny-Q8_0.gguf")

    meta = await fetch_remote_metadata(hub, "org/tiny-GGUF")  # mmproj files are skipped

    assert meta == local
    ranges = [r.headers["range"] for r in fake.requests if r.url.host == "cdn.test"]
    assert ranges[:3] == ["bytes=0-4095", "bytes=4096-8191", "bytes=8192-16383"]


async def test_server_that_ignores_range_still_gives_the_header(
    repos: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(remote_module, "GGUF_INITIAL_BYTES", 4096)
    fake = FakeHub(repos, honour_range=False)
    async with httpx.AsyncClient(transport=httpx.MockTransport(fake.handler)) as http:
        hub = HuggingFaceHub(http, endpoint="https://hub.test", token="")
        meta = await fetch_remote_metadata(hub, "org/tiny-GGUF", filename="tiny-Q8_0.gguf")

    assert meta == read_gguf_metadata(repos / "org" / "tiny-GGUF" / "tiny-Q8_0.gguf")


async def test_split_gguf_reads_every_shard(client: httpx.AsyncClient, repos: Path) -> None:
    split_repo = repos / "org" / "split-GGUF"
    split_repo.mkdir()
    write_tiny_gguf(split_repo / "m.gguf", split_max_tensors=8)
    hub = HuggingFaceHub(client, endpoint="https://hub.test", token="")

    meta = await fetch_remote_metadata(hub, "org/split-GGUF", filename="m-00001-of-00003.gguf")

    assert meta == read_gguf_metadata(split_repo / "m-00001-of-00003.gguf")


async def test_several_gguf_files_need_a_choice(client: httpx.AsyncClient, repos: Path) -> None:
    write_tiny_gguf(repos / "org" / "tiny-GGUF" / "tiny-Q4_0.gguf")
    hub = HuggingFaceHub(client, endpoint="https://hub.test", token="")

    with pytest.raises(ModelFormatError, match=r"tiny-Q4_0\.gguf"):
        await fetch_remote_metadata(hub, "org/tiny-GGUF")


async def test_private_repo_needs_the_token_and_the_cdn_never_sees_it(repos: Path) -> None:
    fake = FakeHub(repos, token="hf_secret")
    async with httpx.AsyncClient(transport=httpx.MockTransport(fake.handler)) as http:
        with pytest.raises(RemoteAccessDenied, match="gated or private"):
            await fetch_remote_metadata(
                HuggingFaceHub(http, endpoint="https://hub.test", token=""),
                "meta-llama/Llama-3-8B",
            )
        meta = await fetch_remote_metadata(
            HuggingFaceHub(http, endpoint="https://hub.test", token="hf_secret"),
            "meta-llama/Llama-3-8B",
        )

    assert meta.num_layers == 32
    # FakeHub._serve asserts that no request to the CDN host carried the token.
    assert any(r.url.host == "cdn.test" for r in fake.requests)


async def test_hf_endpoint_and_token_come_from_the_environment(
    client: httpx.AsyncClient, fake: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.test")
    monkeypatch.setenv("HF_TOKEN", "hf_env")
    fake.token = "hf_env"

    meta = await fetch_remote_metadata(HuggingFaceHub(client), "meta-llama/Llama-3-8B")

    assert meta.num_kv_heads == 8


async def test_unknown_repo_is_not_found(client: httpx.AsyncClient) -> None:
    hub = HuggingFaceHub(client, endpoint="https://hub.test", token="")

    with pytest.raises(RemoteModelNotFound, match="nobody/nothing"):
        await fetch_remote_metadata(hub, "nobody/nothing")


async def test_hub_errors_are_retryable(client: httpx.AsyncClient, fake: FakeHub) -> None:
    fake.status_override = 503
    hub = HuggingFaceHub(client, endpoint="https://hub.test", token="")

    with pytest.raises(RemoteHubUnavailable) as excinfo:
        await fetch_remote_metadata(hub, "meta-llama/Llama-3-8B")
    assert excinfo.value.retryable


async def test_rejected_requests_are_permanent(client: httpx.AsyncClient, fake: FakeHub) -> None:
    fake.status_override = 400
    hub = HuggingFaceHub(client, endpoint="https://hub.test", token="")

    with pytest.raises(RemoteRequestRejected) as excinfo:
        await fetch_remote_metadata(hub, "meta-llama/Llama-3-8B")
    assert not excinfo.value.retryable


async def test_network_failures_are_retryable() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(refuse)) as http:
        hub = HuggingFaceHub(http, endpoint="https://hub.test", token="")
        with pytest.raises(RemoteHubUnavailable, match="cannot reach"):
            await fetch_remote_metadata(hub, "meta-llama/Llama-3-8B")


async def test_modelscope_lists_and_reads_with_its_own_api(
    client: httpx.AsyncClient, fake: FakeHub, repos: Path
) -> None:
    hub = ModelScopeHub(client, endpoint="https://ms.test", token="")

    meta = await fetch_remote_metadata(hub, "meta-llama/Llama-3-8B")

    assert meta == read_hf_folder_metadata(repos / "meta-llama" / "Llama-3-8B")
    listing = next(r for r in fake.requests if r.url.path.endswith("/repo/files"))
    assert listing.url.params["Revision"] == "master"


async def test_config_json_is_fetched_as_json(client: httpx.AsyncClient, repos: Path) -> None:
    (repos / "meta-llama" / "Llama-3-8B" / "config.json").write_text("[1, 2]")
    hub = HuggingFaceHub(client, endpoint="https://hub.test", token="")

    with pytest.raises(ModelFormatError, match="not a JSON object"):
        await fetch_remote_metadata(hub, "meta-llama/Llama-3-8B")
    assert json.loads((repos / "meta-llama" / "Llama-3-8B" / "config.json").read_text()) == [1, 2]
