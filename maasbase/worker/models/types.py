"""Vocabulary of the model cache: remote files, snapshots and the hub seam."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

DEFAULT_HF_ENDPOINT = "https://huggingface.co"
DEFAULT_MODELSCOPE_ENDPOINT = "https://www.modelscope.cn"

# Called from a download thread with the bytes of one file present so far (absolute).
ByteCallback = Callable[[int], None]


@dataclass(frozen=True, slots=True)
class RemoteFile:
    path: str  # relative, "/"-separated, as the hub lists it
    size: int | None = None
    sha256: str | None = None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A repository at one revision, with its files."""

    repo_id: str
    revision: str  # as asked ("main", a tag, a commit)
    commit: str  # what the hub resolved it to; the revision itself when the hub does not say
    files: tuple[RemoteFile, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "repo_id": self.repo_id,
            "revision": self.revision,
            "commit": self.commit,
            "files": [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in self.files],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Snapshot:
        return cls(
            repo_id=str(data["repo_id"]),
            revision=str(data["revision"]),
            commit=str(data["commit"]),
            files=tuple(
                RemoteFile(str(f["path"]), f.get("size"), f.get("sha256")) for f in data["files"]
            ),
        )


class ModelHub(Protocol):
    """One model hub. Methods block (network, disk) and run in worker threads.

    Errors leave as ``maasbase.worker.models.errors`` types; ``DownloadCancelled`` when
    ``cancel`` was set during a download.
    """

    name: str

    def snapshot(self, repo_id: str, revision: str | None) -> Snapshot:
        """List the repository's files at ``revision`` (the hub's default branch when None)."""
        ...

    def cached(self, snapshot: Snapshot, file: RemoteFile) -> Path | None:
        """The complete local copy of ``file``, or None."""
        ...

    def partial_bytes(self, snapshot: Snapshot, file: RemoteFile) -> int:
        """Bytes of an interrupted download that the next download continues from."""
        ...

    def download(
        self,
        snapshot: Snapshot,
        file: RemoteFile,
        on_bytes: ByteCallback,
        cancel: threading.Event,
    ) -> Path:
        """Fetch ``file`` (resuming where possible) and return its local path."""
        ...


@dataclass(frozen=True, slots=True)
class HubSettings:
    """Endpoints and tokens of the hubs. Tokens never appear in ``repr`` or logs."""

    hf_endpoint: str = DEFAULT_HF_ENDPOINT
    hf_token: str | None = field(default=None, repr=False)
    modelscope_endpoint: str = DEFAULT_MODELSCOPE_ENDPOINT
    modelscope_token: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> HubSettings:
        """Settings from the hubs' own variables: ``HF_ENDPOINT``, ``HF_TOKEN``,
        ``MODELSCOPE_DOMAIN`` (a host or a URL) and ``MODELSCOPE_API_TOKEN``."""
        env = os.environ if environ is None else environ
        domain = env.get("MODELSCOPE_DOMAIN", "").strip()
        modelscope = (domain if "://" in domain else f"https://{domain}") if domain else None
        return cls(
            hf_endpoint=(env.get("HF_ENDPOINT") or DEFAULT_HF_ENDPOINT).rstrip("/"),
            hf_token=env.get("HF_TOKEN") or None,
            modelscope_endpoint=(modelscope or DEFAULT_MODELSCOPE_ENDPOINT).rstrip("/"),
            modelscope_token=env.get("MODELSCOPE_API_TOKEN") or None,
        )
