"""Model metadata from a model hub without downloading weights.

The hub lists files with their sizes; ``config.json`` is fetched whole and weight-file
headers through HTTP Range requests on the download URL. All traffic goes through an
injected ``httpx.AsyncClient`` (tests pass one built on ``httpx.MockTransport``).

- Hugging Face: ``GET {endpoint}/api/models/{repo}/revision/{rev}?blobs=true`` lists
  files with sizes; files download from ``{endpoint}/{repo}/resolve/{rev}/{path}``.
  ``HF_ENDPOINT`` and ``HF_TOKEN`` are honoured when not given explicitly.
- ModelScope: ``GET {endpoint}/api/v1/models/{repo}/repo/files?Revision=&Recursive=true``
  lists files; ``{endpoint}/api/v1/models/{repo}/repo?Revision=&FilePath=`` downloads.
  ``MODELSCOPE_DOMAIN`` and ``MODELSCOPE_API_TOKEN`` are honoured.
"""

from __future__ import annotations

import abc
import asyncio
import json
import logging
import os
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote

import httpx

from maasbase.common.errors import Forbidden, InvalidRequest, NotFound, Unavailable

from .gguf_reader import GGUFHeader, gguf_metadata, parse_gguf_header, split_shard_names
from .metadata import HeaderIncomplete, ModelFormatError, ModelMetadata
from .safetensors_reader import (
    CONFIG_FILENAME,
    INDEX_FILENAME,
    SafetensorsHeader,
    header_length,
    hf_metadata,
    parse_safetensors_header,
    shard_names_from_index,
)

logger = logging.getLogger(__name__)
_T = TypeVar("_T")

# First read of a GGUF file; tokenizer arrays of large vocabularies make headers of
# 5–15 MiB, so reads double from here up to GGUF_MAX_HEADER_BYTES.
GGUF_INITIAL_BYTES = 4 * 1024**2
GGUF_MAX_HEADER_BYTES = 128 * 1024**2
# First read of a safetensors file: most headers fit, otherwise one more read.
SAFETENSORS_INITIAL_BYTES = 64 * 1024
MAX_JSON_BYTES = 16 * 1024**2
MAX_CONCURRENT_READS = 8


class RemoteModelNotFound(NotFound):
    code = "remote_model_not_found"


class RemoteAccessDenied(Forbidden):
    code = "remote_access_denied"


class RemoteHubUnavailable(Unavailable):
    code = "remote_hub_unavailable"


class RemoteRequestRejected(InvalidRequest):
    code = "remote_request_rejected"


@dataclass(frozen=True, slots=True)
class RemoteFile:
    path: str
    size: int | None


class HttpHub(abc.ABC):
    """Shared HTTP plumbing: authentication, ranged reads, error translation."""

    name = "hub"
    default_revision = "main"

    def __init__(self, client: httpx.AsyncClient, endpoint: str, token: str | None) -> None:
        self._client = client
        self.endpoint = endpoint.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}

    @abc.abstractmethod
    def file_url(self, repo_id: str, path: str, revision: str) -> str:
        """Download URL of a file at a revision."""

    @abc.abstractmethod
    async def list_files(self, repo_id: str, revision: str) -> list[RemoteFile]:
        """Every file of the repository at a revision, with sizes where the hub gives them."""

    async def read_range(
        self, repo_id: str, path: str, revision: str, start: int, length: int
    ) -> bytes:
        """Bytes ``[start, start + length)`` of a file; fewer at the end of the file."""
        if length <= 0:
            return b""
        url = self.file_url(repo_id, path, revision)
        headers = {**self._headers, "Range": f"bytes={start}-{start + length - 1}"}
        chunks: list[bytes] = []
        received = 0
        try:
            async with self._client.stream(
                "GET", url, headers=headers, follow_redirects=True
            ) as response:
                if response.status_code == 416:
                    return b""
                self._check(response, f"{repo_id}/{path}")
                skip = start if response.status_code == 200 else 0  # Range ignored
                async for chunk in response.aiter_bytes():
                    if skip:
                        dropped = min(skip, len(chunk))
                        chunk, skip = chunk[dropped:], skip - dropped
                    chunks.append(chunk)
                    received += len(chunk)
                    if received >= length:
                        break
        except httpx.HTTPError as exc:
            raise self._unavailable(exc) from exc
        return b"".join(chunks)[:length]

    async def read_json(self, repo_id: str, path: str, revision: str) -> dict[str, Any]:
        data = await self.read_range(repo_id, path, revision, 0, MAX_JSON_BYTES)
        try:
            parsed = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelFormatError(f"{repo_id}/{path} is not valid JSON: {exc}") from exc
        if not isinstance(parsed, dict):
            raise ModelFormatError(f"{repo_id}/{path} is not a JSON object")
        return parsed

    async def _get_json(self, url: str, what: str, params: dict[str, str]) -> Any:
        try:
            response = await self._client.get(
                url, params=params, headers=self._headers, follow_redirects=True
            )
        except httpx.HTTPError as exc:
            raise self._unavailable(exc) from exc
        self._check(response, what)
        try:
            return response.json()
        except ValueError as exc:
            raise RemoteHubUnavailable(f"{self.name} answered {what} with non-JSON") from exc

    def _check(self, response: httpx.Response, what: str) -> None:
        status = response.status_code
        if status < 400:
            return
        if status in (401, 403):
            raise RemoteAccessDenied(
                f"{self.name} refused access to {what} ({status}): the model may be gated or "
                "private; set a token with access or accept its licence on the hub"
            )
        if status == 404:
            raise RemoteModelNotFound(
                f"{what} not found on {self.name}; check the repository, revision and file"
            )
        if status in (408, 429) or status >= 500:
            raise RemoteHubUnavailable(f"{self.name} answered {status} for {what}; try again later")
        raise RemoteRequestRejected(f"{self.name} rejected the request for {what} ({status})")

    def _unavailable(self, exc: httpx.HTTPError) -> RemoteHubUnavailable:
        return RemoteHubUnavailable(f"cannot reach {self.name} at {self.endpoint}: {exc}")


class HuggingFaceHub(HttpHub):
    name = "Hugging Face"

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        endpoint: str | None = None,
        token: str | None = None,
    ) -> None:
        super().__init__(
            client,
            endpoint or os.environ.get("HF_ENDPOINT") or "https://huggingface.co",
            token if token is not None else os.environ.get("HF_TOKEN"),
        )

    def file_url(self, repo_id: str, path: str, revision: str) -> str:
        return f"{self.endpoint}/{repo_id}/resolve/{quote(revision, safe='')}/{quote(path)}"

    async def list_files(self, repo_id: str, revision: str) -> list[RemoteFile]:
        url = f"{self.endpoint}/api/models/{repo_id}/revision/{quote(revision, safe='')}"
        info = await self._get_json(url, repo_id, {"blobs": "true"})
        siblings = info.get("siblings") if isinstance(info, dict) else None
        if not isinstance(siblings, list):
            raise RemoteHubUnavailable(f"{self.name} returned no file list for {repo_id}")
        files = []
        for item in siblings:
            lfs = item.get("lfs") or {}
            size = item.get("size", lfs.get("size"))
            files.append(
                RemoteFile(str(item["rfilename"]), size if isinstance(size, int) else None)
            )
        return files


class ModelScopeHub(HttpHub):
    name = "ModelScope"
    default_revision = "master"

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        endpoint: str | None = None,
        token: str | None = None,
    ) -> None:
        domain = os.environ.get("MODELSCOPE_DOMAIN") or "www.modelscope.cn"
        default = domain if "://" in domain else f"https://{domain}"
        super().__init__(
            client,
            endpoint or default,
            token if token is not None else os.environ.get("MODELSCOPE_API_TOKEN"),
        )

    def file_url(self, repo_id: str, path: str, revision: str) -> str:
        query = f"Revision={quote(revision, safe='')}&FilePath={quote(path, safe='')}"
        return f"{self.endpoint}/api/v1/models/{repo_id}/repo?{query}"

    async def list_files(self, repo_id: str, revision: str) -> list[RemoteFile]:
        url = f"{self.endpoint}/api/v1/models/{repo_id}/repo/files"
        body = await self._get_json(url, repo_id, {"Revision": revision, "Recursive": "true"})
        data = body.get("Data") if isinstance(body, dict) else None
        files = data.get("Files") if isinstance(data, dict) else None
        if not isinstance(files, list):
            message = body.get("Message") if isinstance(body, dict) else None
            raise RemoteModelNotFound(f"{self.name} has no file list for {repo_id}: {message}")
        return [
            RemoteFile(str(f["Path"]), f.get("Size") if isinstance(f.get("Size"), int) else None)
            for f in files
            if f.get("Type") != "tree"
        ]


async def fetch_remote_metadata(
    hub: HttpHub, repo_id: str, *, revision: str | None = None, filename: str | None = None
) -> ModelMetadata:
    """Metadata of a hub model: a GGUF file (``filename``) or a safetensors repository."""
    revision = revision or hub.default_revision
    files = await hub.list_files(repo_id, revision)
    sizes = {f.path: f.size for f in files}
    gguf_files = [p for p in sizes if p.endswith(".gguf") and "mmproj" not in p.lower()]
    if filename is None and not any(p.endswith(".safetensors") for p in sizes):
        if len(gguf_files) != 1:
            raise ModelFormatError(
                f"{repo_id} has no safetensors weights and {len(gguf_files)} GGUF files; "
                f"name the GGUF file to use: {sorted(gguf_files)[:10]}"
            )
        filename = gguf_files[0]
    if filename is not None and filename.endswith(".gguf"):
        names = split_shard_names(filename) or [filename]
        missing = [n for n in names if n not in sizes]
        if missing:
            raise RemoteModelNotFound(f"{repo_id} has no {missing[0]}")
        headers = await _gather(
            [_read_gguf_header(hub, repo_id, n, revision, sizes[n]) for n in names]
        )
        return gguf_metadata(headers)
    if CONFIG_FILENAME not in sizes:
        raise RemoteModelNotFound(f"{repo_id} has no {CONFIG_FILENAME}")
    config = await hub.read_json(repo_id, CONFIG_FILENAME, revision)
    if INDEX_FILENAME in sizes:
        index = await hub.read_json(repo_id, INDEX_FILENAME, revision)
        shards = shard_names_from_index(index)
    else:
        shards = sorted(p for p in sizes if p.endswith(".safetensors") and "/" not in p)
    if not shards:
        raise ModelFormatError(f"{repo_id} has no safetensors weights at its top level")
    st_headers = await _gather(
        [_read_safetensors_header(hub, repo_id, s, revision) for s in shards]
    )
    logger.debug("read %d safetensors headers of %s", len(st_headers), repo_id)
    return hf_metadata(config, st_headers, file_names=sizes)


async def _gather(reads: Sequence[Coroutine[Any, Any, _T]]) -> list[_T]:
    """Run header reads with bounded concurrency, keeping their order."""
    limit = asyncio.Semaphore(MAX_CONCURRENT_READS)

    async def bounded(read: Coroutine[Any, Any, _T]) -> _T:
        async with limit:
            return await read

    return list(await asyncio.gather(*(bounded(r) for r in reads)))


async def _read_safetensors_header(
    hub: HttpHub, repo_id: str, path: str, revision: str
) -> SafetensorsHeader:
    data = await hub.read_range(repo_id, path, revision, 0, SAFETENSORS_INITIAL_BYTES)
    needed = 8 + header_length(data)
    if len(data) < needed:
        data += await hub.read_range(repo_id, path, revision, len(data), needed - len(data))
    try:
        return parse_safetensors_header(data)
    except HeaderIncomplete as exc:
        raise ModelFormatError(f"{repo_id}/{path} ends inside its safetensors header") from exc


async def _read_gguf_header(
    hub: HttpHub, repo_id: str, path: str, revision: str, size: int | None
) -> GGUFHeader:
    data = b""
    want = GGUF_INITIAL_BYTES
    while True:
        chunk = await hub.read_range(repo_id, path, revision, len(data), want - len(data))
        data += chunk
        try:
            return parse_gguf_header(data)
        except HeaderIncomplete as exc:
            at_end = len(data) < want or (size is not None and len(data) >= size)
            if at_end:
                raise ModelFormatError(f"{repo_id}/{path} ends inside its GGUF header") from exc
            if want >= GGUF_MAX_HEADER_BYTES:
                raise ModelFormatError(
                    f"{repo_id}/{path}: GGUF header larger than {GGUF_MAX_HEADER_BYTES} bytes"
                ) from exc
            want = min(max(exc.needed_bytes, 2 * want), GGUF_MAX_HEADER_BYTES)
            logger.debug("GGUF header of %s/%s: reading up to %d bytes", repo_id, path, want)
