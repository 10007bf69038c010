"""ModelScope over its HTTP file API, with resumable downloads.

- list: ``GET {endpoint}/api/v1/models/{repo}/repo/files?Revision=&Recursive=true``
  (``Data.Files[]`` with ``Path``, ``Size``, ``Sha256``, ``Type`` blob/tree);
- download: ``GET {endpoint}/api/v1/models/{repo}/repo?Revision=&FilePath=`` (the hub may
  redirect to a CDN), streamed to ``<file>.incomplete`` and renamed when complete and
  checked (size, and SHA-256 when the listing gives one). A later download continues
  the ``.incomplete`` file with ``Range: bytes=<have>-``, also after a worker restart.
- token: sent as ``Authorization: Bearer <token>`` and as the ``m_session_id`` cookie
  (what the ``modelscope`` SDK sends), both only to the hub's own host.

Files land in ``cache_dir/<org>/<name>/<revision>/<path>``. A complete file whose size
matches the listing is reused without downloading.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

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

CHUNK_BYTES = 1024 * 1024
MAX_ATTEMPTS = 3  # per download call; a broken transfer resumes from the bytes on disk
RETRY_DELAY_SECONDS = 0.5
TIMEOUT = httpx.Timeout(30.0, read=60.0)
REPO_ID = re.compile(r"^[\w][\w.-]*/[\w][\w.-]*$")
TOKEN_HINT = "set a ModelScope token that can read it (MODELSCOPE_API_TOKEN)"


class ModelScopeHub:
    name = "ModelScope"
    default_revision = "master"

    def __init__(
        self,
        cache_dir: Path,
        *,
        endpoint: str,
        token: str | None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._cache_dir = cache_dir
        self._endpoint = endpoint.rstrip("/")
        self._token = token
        self._transport = transport

    def snapshot(self, repo_id: str, revision: str | None) -> Snapshot:
        revision = revision or self.default_revision
        if not REPO_ID.match(repo_id):
            raise InvalidModelSource(
                f"ModelScope repository ids look like org/name, not {repo_id!r}; "
                "fix the model source"
            )
        url = f"{self._endpoint}/api/v1/models/{repo_id}/repo/files"
        what = f"{repo_id}@{revision}"
        with self._client() as client:
            try:
                response = client.get(url, params={"Revision": revision, "Recursive": "true"})
            except httpx.HTTPError as exc:
                raise self._unreachable(exc, what) from exc
        self._check(response, what)
        files = _listed_files(_json(response, what), what)
        return Snapshot(repo_id, revision, revision, files)

    def cached(self, snapshot: Snapshot, file: RemoteFile) -> Path | None:
        path = self._destination(snapshot, file)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return None
        return path if file.size is None or size == file.size else None

    def partial_bytes(self, snapshot: Snapshot, file: RemoteFile) -> int:
        try:
            have = _partial(self._destination(snapshot, file)).stat().st_size
        except FileNotFoundError:
            return 0
        return have if file.size is None else min(have, file.size)

    def download(
        self,
        snapshot: Snapshot,
        file: RemoteFile,
        on_bytes: ByteCallback,
        cancel: threading.Event,
    ) -> Path:
        destination = self._destination(snapshot, file)
        partial = _partial(destination)
        what = f"{snapshot.repo_id}/{file.path}@{snapshot.revision}"
        query = f"Revision={quote(snapshot.revision, safe='')}&FilePath={quote(file.path, safe='')}"
        url = f"{self._endpoint}/api/v1/models/{snapshot.repo_id}/repo?{query}"
        try:
            destination.parent.mkdir(parents=True, exist_ok=True)
            with self._client() as client:
                for attempt in range(1, MAX_ATTEMPTS + 1):
                    try:
                        self._transfer(client, url, partial, file, what, on_bytes, cancel)
                        break
                    except httpx.TransportError as exc:
                        if attempt == MAX_ATTEMPTS:
                            raise self._unreachable(exc, what) from exc
                        if cancel.wait(RETRY_DELAY_SECONDS):
                            raise DownloadCancelled from None
            _verify(partial, file, what, cancel)
            os.replace(partial, destination)
        except OSError as exc:
            raise from_os_error(exc, what) from exc
        return destination

    def _transfer(
        self,
        client: httpx.Client,
        url: str,
        partial: Path,
        file: RemoteFile,
        what: str,
        on_bytes: ByteCallback,
        cancel: threading.Event,
    ) -> None:
        have = partial.stat().st_size if partial.exists() else 0
        if file.size is not None and have >= file.size:
            if have == file.size:
                return
            partial.unlink()  # longer than the file: a stale leftover
            have = 0
        headers = {"Accept-Encoding": "identity"}  # Range counts bytes of the file itself
        if have:
            headers["Range"] = f"bytes={have}-"
        with client.stream("GET", url, headers=headers) as response:
            if response.status_code == 416:
                partial.unlink(missing_ok=True)  # the file changed; start over next attempt
                raise ModelHubUnavailable(f"ModelScope refused to resume {what}; retrying")
            self._check(response, what)
            if have and response.status_code != 206:
                have = 0  # the server ignored Range and sends the whole file
            elif have and _range_start(response) != have:
                partial.unlink(missing_ok=True)
                raise ModelHubUnavailable(
                    f"ModelScope resumed {what} at the wrong offset; retrying"
                )
            on_bytes(have)
            with partial.open("ab" if have else "wb") as out:
                for chunk in response.iter_bytes():  # as received: a cut loses nothing
                    if cancel.is_set():
                        raise DownloadCancelled
                    out.write(chunk)
                    have += len(chunk)
                    on_bytes(have)

    def _client(self) -> httpx.Client:
        headers = {"User-Agent": "maas-base"}
        cookies = httpx.Cookies()
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
            host = urlsplit(self._endpoint).hostname or ""
            cookies.set("m_session_id", self._token, domain=host)
        return httpx.Client(
            headers=headers,
            cookies=cookies,
            follow_redirects=True,
            timeout=TIMEOUT,
            transport=self._transport,
        )

    def _destination(self, snapshot: Snapshot, file: RemoteFile) -> Path:
        revision = quote(snapshot.revision, safe="")
        return self._cache_dir / snapshot.repo_id / revision / safe_relative(file.path)

    def _check(self, response: httpx.Response, what: str) -> None:
        status = response.status_code
        if status < 400:
            return
        if status in (401, 403):
            raise ModelAccessDenied(
                f"ModelScope refused {what} ({status}): the repository is private or gated, or "
                f"the token is invalid; {TOKEN_HINT}"
            )
        if status == 404:
            raise ModelSourceNotFound(
                f"ModelScope has no {what}; check the repository, revision and file"
            )
        if status in (408, 429) or status >= 500:
            raise ModelHubUnavailable(
                f"ModelScope at {self._endpoint} answered {status} for {what}; retrying later"
            )
        raise InvalidModelSource(f"ModelScope rejected the request for {what} ({status})")

    def _unreachable(self, exc: httpx.HTTPError, what: str) -> ModelHubUnavailable:
        return ModelHubUnavailable(
            f"cannot reach ModelScope at {self._endpoint} for {what}: {exc!r}; retrying later "
            "(a partial download resumes)"
        )


def _partial(destination: Path) -> Path:
    return destination.with_name(destination.name + ".incomplete")


def _json(response: httpx.Response, what: str) -> Any:
    try:
        return response.json()
    except ValueError as exc:
        raise ModelHubUnavailable(
            f"ModelScope answered {what} with non-JSON; retrying later"
        ) from exc


def _listed_files(body: Any, what: str) -> tuple[RemoteFile, ...]:
    data = body.get("Data") if isinstance(body, dict) else None
    files = data.get("Files") if isinstance(data, dict) else None
    if not isinstance(files, list) or (isinstance(body, dict) and body.get("Success") is False):
        message = body.get("Message") if isinstance(body, dict) else None
        raise ModelSourceNotFound(
            f"ModelScope has no file list for {what} ({message or 'no reason given'}); "
            "check the repository and revision"
        )
    listed = []
    for item in files:
        if not isinstance(item, dict) or item.get("Type") == "tree" or not item.get("Path"):
            continue
        size = item.get("Size")
        sha256 = item.get("Sha256")
        listed.append(
            RemoteFile(
                str(item["Path"]),
                size if isinstance(size, int) else None,
                sha256.lower() if isinstance(sha256, str) and sha256 else None,
            )
        )
    return tuple(listed)


def _range_start(response: httpx.Response) -> int | None:
    match = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
    return int(match.group(1)) if match else None


def _verify(partial: Path, file: RemoteFile, what: str, cancel: threading.Event) -> None:
    """Check size and SHA-256; a mismatch drops the file so the next attempt starts over."""
    size = partial.stat().st_size
    problem = None
    if file.size is not None and size != file.size:
        problem = f"has {size} bytes instead of {file.size}"
    elif file.sha256:
        digest = hashlib.sha256()
        with partial.open("rb") as handle:
            while block := handle.read(CHUNK_BYTES):
                if cancel.is_set():
                    raise DownloadCancelled
                digest.update(block)
        if digest.hexdigest() != file.sha256:
            problem = "does not match its SHA-256"
    if problem:
        partial.unlink(missing_ok=True)
        raise ModelHubUnavailable(f"the download of {what} {problem}; retrying from the start")
