"""Helpers to run real ``maas-base`` processes in tests."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

MAAS = str(Path(sys.executable).with_name("maas-base"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(check: Callable[[], bool], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)


def spawn(*args: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as handle:  # the child keeps its own copy of the descriptor
        return subprocess.Popen([MAAS, *args], stdout=handle, stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen[bytes], *, timeout: float = 20) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError("process did not stop on SIGTERM") from None
    return proc.returncode


@contextmanager
def process(*args: str, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    proc = spawn(*args, log=log)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


class Api:
    """A logged-in admin client for a running server."""

    def __init__(self, base: str, password: str) -> None:
        self.base = base
        response = httpx.post(
            f"{base}/api/v1/auth/login",
            json={"username": "admin", "password": password},
            timeout=10,
        )
        response.raise_for_status()
        self.headers = {"Authorization": f"Bearer {response.json()['access_token']}"}

    def get(self, path: str, **params: Any) -> Any:
        response = httpx.get(f"{self.base}{path}", headers=self.headers, params=params, timeout=10)
        response.raise_for_status()
        return response.json()

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.request(
            method, f"{self.base}{path}", headers=self.headers, timeout=30, **kwargs
        )

    def instances(self, model_id: int) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.get("/api/v1/model-instances", model_id=model_id)[
            "items"
        ]
        return items


def wait_ready(base: str, *, timeout: float = 60) -> None:
    """Wait until the server at ``base`` answers /readyz."""

    def ready() -> bool:
        try:
            return httpx.get(f"{base}/readyz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    wait_until(ready, timeout=timeout, what=f"the server at {base}")


def start_args(tmp_path: Path, port: int, password: str, *extra: str) -> list[str]:
    """``maas-base start`` on SQLite in ``tmp_path`` with a fixed admin password."""
    return [
        "start",
        "--port",
        str(port),
        "--data-dir",
        str(tmp_path / "data"),
        "--database-url",
        f"sqlite:///{tmp_path / 'maas.db'}",
        "--bootstrap-password",
        password,
        *extra,
    ]


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())
