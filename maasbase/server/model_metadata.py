"""Model metadata for estimation, from wherever the model's files are.

Local paths are read on the server (the path must be visible to it); hub models are
read remotely through range requests. Results are cached per source; failures are
cached briefly so an offline hub is not hammered.
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from maasbase.common.errors import MaasError, NotFound
from maasbase.common.instances import ModelSource, SourceType
from maasbase.server.estimate import (
    HuggingFaceHub,
    ModelMetadata,
    ModelScopeHub,
    fetch_remote_metadata,
    read_gguf_metadata,
    read_hf_folder_metadata,
)

FAILURE_TTL_SECONDS = 15.0


class MetadataUnavailable(MaasError):
    code = "model_metadata_unavailable"
    status_code = 422


def _local(source: ModelSource) -> ModelMetadata:
    assert source.path is not None
    path = Path(source.path).expanduser()
    if not path.exists():
        raise NotFound(
            f"{path} does not exist on the server; local_path models must be readable by "
            "the server for memory estimation"
        )
    if path.is_file():
        if path.suffix == ".gguf":
            return read_gguf_metadata(path)
        raise MetadataUnavailable(f"{path} is not a GGUF file; give a .gguf file or a folder")
    ggufs = sorted(p for p in path.glob("*.gguf") if "mmproj" not in p.name.lower())
    if source.file:
        ggufs = [p for p in ggufs if fnmatch.fnmatch(p.name, source.file)]
    if ggufs and not any(path.glob("*.safetensors")):
        return read_gguf_metadata(ggufs[0])
    return read_hf_folder_metadata(path)


def source_key(source: ModelSource) -> str:
    return json.dumps(source.model_dump(mode="json"), sort_keys=True)


@dataclass
class MetadataCache:
    _found: dict[str, ModelMetadata] = field(default_factory=dict)
    _failed: dict[str, tuple[float, MaasError]] = field(default_factory=dict)

    async def get(self, source: ModelSource) -> ModelMetadata:
        """Metadata for ``source``; raises a ``MaasError`` that says why not."""
        key = source_key(source)
        if key in self._found:
            return self._found[key]
        failed = self._failed.get(key)
        if failed is not None and time.monotonic() - failed[0] < FAILURE_TTL_SECONDS:
            raise failed[1]
        try:
            meta = await self._read(source)
        except MaasError as exc:
            self._failed[key] = (time.monotonic(), exc)
            raise
        except (OSError, ValueError) as exc:
            error = MetadataUnavailable(f"cannot read model metadata of {source.describe()}: {exc}")
            self._failed[key] = (time.monotonic(), error)
            raise error from exc
        self._found[key] = meta
        self._failed.pop(key, None)
        return meta

    async def _read(self, source: ModelSource) -> ModelMetadata:
        if source.type is SourceType.LOCAL_PATH:
            return await asyncio.to_thread(_local, source)
        assert source.repo_id is not None
        async with httpx.AsyncClient(timeout=30.0, follow_redirects=False) as client:
            hub = (
                HuggingFaceHub(client)
                if source.type is SourceType.HUGGINGFACE
                else ModelScopeHub(client)
            )
            return await fetch_remote_metadata(
                hub, source.repo_id, revision=source.revision, filename=source.file
            )
