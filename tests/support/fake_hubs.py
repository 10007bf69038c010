"""Fake Hugging Face and ModelScope hubs served over real HTTP (test doubles), each with
a CDN on a second origin that honours HTTP Range."""

from __future__ import annotations

import hashlib
import json
import random
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

COMMIT = "0123456789abcdef0123456789abcdef01234567"
TOKEN = "hf_test_secret_token"
LFS_SUFFIXES = (".gguf", ".safetensors")


def blob(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


@dataclass
class Repo:
    files: dict[str, bytes]
    token: str | None = None  # private: only this token may read it
    gated: bool = False
    missing: set[str] = field(default_factory=set)  # listed, but resolve answers 404


Handler = Callable[[BaseHTTPRequestHandler, str], None]


class _RequestHandler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        self.server.handle(self, "GET")

    def do_HEAD(self) -> None:
        self.server.handle(self, "HEAD")

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    def __init__(self, handle: Handler) -> None:
        super().__init__(("127.0.0.1", 0), _RequestHandler)
        self.handle = handle


@contextmanager
def serving(handle: Handler) -> Iterator[str]:
    server = _Server(handle)
    thread = threading.Thread(target=server.serve_forever, args=(0.01,))
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def respond(
    handler: BaseHTTPRequestHandler,
    method: str,
    status: int,
    headers: dict[str, str],
    body: bytes = b"",
    *,
    send_only: int | None = None,
) -> None:
    handler.send_response(status)
    headers = {"Content-Length": str(len(body)), **headers}
    for name, value in headers.items():
        handler.send_header(name, value)
    handler.end_headers()
    if method == "GET":
        handler.wfile.write(body if send_only is None else body[:send_only])


def serve_bytes(
    handler: BaseHTTPRequestHandler,
    method: str,
    data: bytes,
    headers: dict[str, str],
    *,
    send_only: int | None = None,
) -> None:
    """``data`` with ``Accept-Ranges``; a ``Range: bytes=N-`` request gets ``206``."""
    headers = {"Accept-Ranges": "bytes", **headers}
    match = re.fullmatch(r"bytes=(\d+)-(\d*)", handler.headers.get("Range", ""))
    if not match:
        respond(handler, method, 200, headers, data, send_only=send_only)
        return
    start = int(match[1])
    end = int(match[2]) if match[2] else len(data) - 1
    if start >= len(data):
        respond(handler, method, 416, {"Content-Range": f"bytes */{len(data)}"})
        return
    headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
    respond(handler, method, 206, headers, data[start : end + 1], send_only=send_only)


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]


class FakeHub:
    """State shared by a hub server and its CDN server (another origin)."""

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.seen: list[Seen] = []
        self.cut_after: dict[str, int] = {}  # CDN path -> bytes sent before the first cut
        self.api_status: int | None = None  # force an answer to the listing
        self.cdn_delay = 0.0
        self.endpoint = ""
        self.cdn = ""
        self._lock = threading.Lock()

    def handle_hub(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        raise NotImplementedError

    def cdn_gets(self, data: bytes) -> list[Seen]:
        path = f"/cdn/{hashlib.sha256(data).hexdigest()}"
        return [s for s in self.seen if s.method == "GET" and s.path == path]

    def handle_cdn(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        path = urlsplit(handler.path).path
        self._record(handler, method, path)
        blobs = {
            hashlib.sha256(d).hexdigest(): d for r in self.repos.values() for d in r.files.values()
        }
        if self.cdn_delay:
            threading.Event().wait(self.cdn_delay)
        with self._lock:
            send_only = self.cut_after.pop(path, None) if method == "GET" else None
        data = blobs[path.removeprefix("/cdn/")]
        serve_bytes(handler, method, data, {"ETag": '"cdn"'}, send_only=send_only)

    def _record(self, handler: BaseHTTPRequestHandler, method: str, path: str) -> None:
        with self._lock:
            self.seen.append(Seen(method, path, dict(handler.headers.items())))


class FakeHuggingFace(FakeHub):
    def handle_hub(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        path = unquote(urlsplit(handler.path).path)
        self._record(handler, method, path)
        if match := re.fullmatch(r"/api/models/([^/]+/[^/]+)/revision/(.+)", path):
            self._model_info(handler, method, match[1], match[2])
        elif match := re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path):
            self._resolve(handler, method, self.repos[match[1]], match[3])
        else:
            respond(handler, method, 404, {})

    def _denied(self, handler: BaseHTTPRequestHandler, method: str, repo: Repo) -> bool:
        if repo.token and handler.headers.get("Authorization") != f"Bearer {repo.token}":
            respond(handler, method, 401, {"X-Error-Code": "RepoNotFound"})
            return True
        return False

    def _model_info(
        self, handler: BaseHTTPRequestHandler, method: str, repo_id: str, rev: str
    ) -> None:
        repo = self.repos.get(repo_id)
        if self.api_status:
            respond(handler, method, self.api_status, {})
        elif repo is None:
            respond(handler, method, 404, {"X-Error-Code": "RepoNotFound"})
        elif self._denied(handler, method, repo):
            pass
        elif rev not in ("main", COMMIT):
            respond(handler, method, 404, {"X-Error-Code": "RevisionNotFound"})
        else:
            siblings = [sibling(name, data) for name, data in repo.files.items()]
            body = json.dumps({"id": repo_id, "sha": COMMIT, "siblings": siblings}).encode()
            respond(handler, method, 200, {"Content-Type": "application/json"}, body)

    def _resolve(self, handler: BaseHTTPRequestHandler, method: str, repo: Repo, name: str) -> None:
        commit = {"X-Repo-Commit": COMMIT}
        if self._denied(handler, method, repo):
            return
        if repo.gated and not handler.headers.get("Authorization"):
            respond(handler, method, 403, {"X-Error-Code": "GatedRepo"})
        elif name not in repo.files or name in repo.missing:
            respond(handler, method, 404, {"X-Error-Code": "EntryNotFound", **commit})
        elif name.endswith(LFS_SUFFIXES):
            sha = hashlib.sha256(repo.files[name]).hexdigest()
            respond(handler, method, 302, {
                **commit,
                "Location": f"{self.cdn}/cdn/{sha}",
                "X-Linked-Etag": f'"{sha}"',
                "X-Linked-Size": str(len(repo.files[name])),
            })  # fmt: skip
        else:
            etag = hashlib.sha1(repo.files[name]).hexdigest()
            serve_bytes(handler, method, repo.files[name], {**commit, "ETag": f'"{etag}"'})


class FakeModelScope(FakeHub):
    def __init__(self) -> None:
        super().__init__()
        self.wrong_sha256: set[str] = set()  # listed with a SHA-256 that does not match

    def handle_hub(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        parts = urlsplit(handler.path)
        path = unquote(parts.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        self._record(handler, method, path)
        match = re.fullmatch(r"/api/v1/models/([^/]+/[^/]+)/repo(/files)?", path)
        repo = self.repos.get(match[1]) if match else None
        if self.api_status:
            respond(handler, method, self.api_status, {})
        elif match is None or repo is None:
            body = json.dumps({"Code": 10010205, "Success": False, "Message": "not exist"})
            respond(handler, method, 404, {"Content-Type": "application/json"}, body.encode())
        elif repo.token and not self._authorized(handler, repo.token):
            respond(handler, method, 401, {})
        elif match[2]:
            assert query == {"Revision": "master", "Recursive": "true"}
            files = [{"Name": "sub", "Path": "sub", "Type": "tree", "Size": 0}]
            files += [
                ms_file(name, data, wrong_sha256=name in self.wrong_sha256)
                for name, data in repo.files.items()
            ]
            body = json.dumps({"Code": 200, "Success": True, "Data": {"Files": files}})
            respond(handler, method, 200, {"Content-Type": "application/json"}, body.encode())
        else:
            sha = hashlib.sha256(repo.files[query["FilePath"]]).hexdigest()
            respond(handler, method, 302, {"Location": f"{self.cdn}/cdn/{sha}"})

    @staticmethod
    def _authorized(handler: BaseHTTPRequestHandler, token: str) -> bool:
        cookie = handler.headers.get("Cookie", "")
        return handler.headers.get("Authorization") == f"Bearer {token}" or (
            f"m_session_id={token}" in cookie
        )


def ms_file(name: str, data: bytes, *, wrong_sha256: bool = False) -> dict[str, object]:
    sha = "0" * 64 if wrong_sha256 else hashlib.sha256(data).hexdigest()
    return {"Name": name.rsplit("/", 1)[-1], "Path": name, "Size": len(data), "Sha256": sha,
            "Type": "blob", "Revision": "c0ffee"}  # fmt: skip


def sibling(name: str, data: bytes) -> dict[str, object]:
    sibling: dict[str, object] = {"rfilename": name, "size": len(data), "blobId": "b" * 40}
    if name.endswith(LFS_SUFFIXES):
        sha = hashlib.sha256(data).hexdigest()
        sibling["lfs"] = {"size": len(data), "sha256": sha, "pointerSize": 130}
    return sibling


@contextmanager
def running(fake: FakeHub) -> Iterator[None]:
    with serving(fake.handle_cdn) as cdn, serving(fake.handle_hub) as endpoint:
        fake.cdn, fake.endpoint = cdn, endpoint
        yield
