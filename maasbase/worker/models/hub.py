"""Hugging Face through ``huggingface_hub``: listing, cache layout, downloads, errors.

Files land in the library's own cache layout under ``cache_dir``
(``models--org--name/{blobs,snapshots/<commit>}``), so blobs shared by revisions are
stored once and the library's per-blob file locks apply. ``huggingface_hub`` (2.x)
retries a transfer that breaks mid-file with an HTTP Range request from the bytes it
has written (it writes in 10 MiB chunks); it discards the partial file when the call
itself fails, so a download stopped by a worker restart starts that file again.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import ClassVar

import httpx2
from huggingface_hub import HfApi, hf_hub_download, try_to_load_from_cache
from huggingface_hub.errors import (
    EntryNotFoundError,
    FileMetadataError,
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from maasbase.common.errors import MaasError

from .errors import (
    DownloadCancelled,
    InvalidModelSource,
    ModelAccessDenied,
    ModelHubUnavailable,
    ModelSourceNotFound,
    from_os_error,
)
from .selection import safe_relative
from .types import ByteCallback, RemoteFile, Snapshot

LIBRARY_NAME = "maas-base"
TOKEN_HINT = "set a token that can read it (HF_TOKEN or the worker's hub token setting)"


class HuggingFaceHub:
    name = "Hugging Face"
    default_revision = "main"

    def __init__(self, cache_dir: Path, *, endpoint: str, token: str | None) -> None:
        self._cache_dir = cache_dir
        self._endpoint = endpoint.rstrip("/")
        self._token = token  # None: huggingface_hub's own lookup (HF_TOKEN, stored login)

    def snapshot(self, repo_id: str, revision: str | None) -> Snapshot:
        revision = revision or self.default_revision
        api = HfApi(endpoint=self._endpoint, token=self._token, library_name=LIBRARY_NAME)
        try:
            info = api.model_info(repo_id, revision=revision, files_metadata=True)
        except Exception as exc:
            raise translate_error(exc, f"{repo_id}@{revision}", self._endpoint) from exc
        files = tuple(
            RemoteFile(s.rfilename, s.size, s.lfs.sha256 if s.lfs else None)
            for s in info.siblings or ()
        )
        return Snapshot(repo_id, revision, info.sha or revision, files)

    def cached(self, snapshot: Snapshot, file: RemoteFile) -> Path | None:
        found = try_to_load_from_cache(
            snapshot.repo_id, file.path, cache_dir=self._cache_dir, revision=snapshot.commit
        )
        return Path(found) if isinstance(found, str) and os.path.exists(found) else None

    def partial_bytes(self, snapshot: Snapshot, file: RemoteFile) -> int:
        return 0  # huggingface_hub keeps no partial file between calls

    def download(
        self,
        snapshot: Snapshot,
        file: RemoteFile,
        on_bytes: ByteCallback,
        cancel: threading.Event,
    ) -> Path:
        safe_relative(file.path)
        try:
            path = hf_hub_download(
                snapshot.repo_id,
                file.path,
                revision=snapshot.commit,
                cache_dir=self._cache_dir,
                endpoint=self._endpoint,
                token=self._token,
                library_name=LIBRARY_NAME,
                tqdm_class=byte_counter(on_bytes, cancel),
            )
        except DownloadCancelled:
            raise
        except Exception as exc:
            what = f"{snapshot.repo_id}/{file.path}@{snapshot.revision}"
            raise translate_error(exc, what, self._endpoint) from exc
        return Path(path)


class ByteCounter:
    """Stands in for tqdm inside ``huggingface_hub``: counts bytes, draws nothing.

    ``update_transfer`` makes the library use one bar for Xet transfers too, so bytes
    are counted once. Raises ``DownloadCancelled`` on the next chunk once ``cancel`` is set.
    """

    sink: ClassVar[_Sink]

    def __init__(self, *args: object, total: int | None = None, initial: int = 0, **_: object):
        self.n = initial
        self.total = total
        self.sink.on_bytes(self.n)

    def update(self, n: float | None = 1) -> None:
        if self.sink.cancel.is_set():
            raise DownloadCancelled
        self.n += int(n or 0)
        self.sink.on_bytes(self.n)

    def update_transfer(self, n: float | None = 1) -> None:
        if self.sink.cancel.is_set():
            raise DownloadCancelled

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        return None

    def set_transfer_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        return None

    def refresh(self) -> None:
        return None

    def close(self) -> None:
        return None

    def __enter__(self) -> ByteCounter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None


def byte_counter(on_bytes: ByteCallback, cancel: threading.Event) -> type[ByteCounter]:
    """A ``ByteCounter`` class bound to one download (the library takes a class)."""

    class BoundByteCounter(ByteCounter):
        sink = _Sink(on_bytes, cancel)

    return BoundByteCounter


@dataclass(frozen=True, slots=True)
class _Sink:
    on_bytes: ByteCallback
    cancel: threading.Event


def translate_error(exc: Exception, what: str, endpoint: str) -> Exception:
    """The typed error for a ``huggingface_hub``/``httpx2``/OS failure on ``what``."""
    if isinstance(exc, GatedRepoError):
        return ModelAccessDenied(
            f"Hugging Face repository {what} is gated: accept its terms on the hub with your "
            f"account and {TOKEN_HINT}"
        )
    if isinstance(exc, RepositoryNotFoundError):
        if _status(exc) == 404:
            return ModelSourceNotFound(
                f"Hugging Face repository {what} does not exist at {endpoint}; check the name"
            )
        return ModelAccessDenied(
            f"Hugging Face repository {what} was not found or is private or gated "
            f"({_status(exc)}): check the name, or {TOKEN_HINT}"
        )
    if isinstance(exc, RevisionNotFoundError):
        return ModelSourceNotFound(f"Hugging Face has no revision {what}; check the revision")
    if isinstance(exc, LocalEntryNotFoundError | OfflineModeIsEnabled | FileMetadataError):
        return ModelHubUnavailable(
            f"cannot fetch {what} from Hugging Face at {endpoint}: {_first_line(exc)}; "
            "check the worker's network, proxy and HF_ENDPOINT"
        )
    if isinstance(exc, EntryNotFoundError):
        return ModelSourceNotFound(f"Hugging Face has no file {what}; check the file name")
    if isinstance(exc, HfHubHTTPError):
        return _from_status(_status(exc), what, endpoint, exc)
    if isinstance(exc, httpx2.RequestError):
        return ModelHubUnavailable(
            f"cannot reach Hugging Face at {endpoint} for {what}: {exc!r}; retrying later"
        )
    if isinstance(exc, OSError):
        return from_os_error(exc, what)
    return exc


def _from_status(status: int | None, what: str, endpoint: str, exc: Exception) -> MaasError:
    if status in (401, 403):
        return ModelAccessDenied(
            f"Hugging Face refused {what} ({status}): the token is missing, invalid or "
            f"lacks access; {TOKEN_HINT}"
        )
    if status == 404:
        return ModelSourceNotFound(f"Hugging Face has no {what}; check the repository and file")
    if status is None or status in (408, 429) or status >= 500:
        return ModelHubUnavailable(
            f"Hugging Face at {endpoint} answered {status} for {what}; retrying later"
        )
    return InvalidModelSource(f"Hugging Face rejected the request for {what} ({status}): {exc}")


def _status(exc: Exception) -> int | None:
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
