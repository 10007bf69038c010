"""API fuzzing with schemathesis against a live server: shared by the CI test
(``tests/integration/test_api_fuzz.py``) and the longer opt-in run (``bench/api_fuzz.py``).

The server runs in this process (uvicorn on a free loopback port); ``st run`` runs as a
subprocess against its live OpenAPI schema with the credentials of one principal.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
from fastapi import FastAPI

from maasbase.common.http_server import bind, make_server

CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
)
REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Principal:
    name: str
    token: str
    key_ids: tuple[int, ...]
    user_ids: tuple[int, ...]


@dataclass(frozen=True)
class FuzzResult:
    returncode: int
    output: str

    @property
    def summary(self) -> str:
        lines = self.output.strip().splitlines()
        return "\n".join(lines[-12:])


@contextlib.asynccontextmanager
async def serve(app: FastAPI, *, trusted_proxies: tuple[str, ...] = ()) -> AsyncIterator[str]:
    """Serve ``app`` over real HTTP (uvicorn, as ``maas-base start`` does) on a free
    loopback port; yields its base URL."""
    app.openapi()  # built once up front: the fuzzer's first request must not wait for it
    sock = bind("127.0.0.1", 0, what="the fuzzed server", flag="-")
    port = sock.getsockname()[1]
    server = make_server(app, trusted_proxies=trusted_proxies)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        for _ in range(200):
            if server.started:
                break
            await asyncio.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()


async def _key(client: httpx.AsyncClient, token: str, name: str) -> tuple[str, int]:
    response = await client.post(
        "/api/v1/api-keys", json={"name": name}, headers={"Authorization": f"Bearer {token}"}
    )
    response.raise_for_status()
    body = response.json()
    return body["key"], body["id"]


async def _login(client: httpx.AsyncClient, username: str, password: str) -> str:
    response = await client.post(
        "/api/v1/auth/login", json={"username": username, "password": password}
    )
    response.raise_for_status()
    token: str = response.json()["access_token"]
    return token


async def principals(base_url: str, admin_password: str) -> dict[str, Principal]:
    """An admin and a user, each with an API key of scope ``all`` (fresh names, so a
    database can be fuzzed more than once)."""
    suffix = uuid.uuid4().hex[:8]
    username, password = f"fuzz-user-{suffix}", f"fuzz-password-{suffix}"
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        admin_session = await _login(client, "admin", admin_password)
        admin_key, admin_key_id = await _key(client, admin_session, f"fuzz-admin-{suffix}")
        response = await client.post(
            "/api/v1/users",
            json={"username": username, "password": password},
            headers={"Authorization": f"Bearer {admin_session}"},
        )
        response.raise_for_status()
        user_id = response.json()["id"]
        user_session = await _login(client, username, password)
        user_key, user_key_id = await _key(client, user_session, username)
        me = await client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {admin_key}"})
        admin_id = me.json()["id"]
    keys = (admin_key_id, user_key_id)
    users = (admin_id, user_id)
    return {
        "admin": Principal("admin", admin_key, keys, users),
        "user": Principal("user", user_key, keys, users),
    }


async def run_schemathesis(
    base_url: str,
    principal: Principal,
    *,
    max_examples: int,
    max_time: int | None = None,
    phases: str = "examples,coverage,fuzzing,stateful",
    deadline_s: float = 900,
    extra: tuple[str, ...] = (),
) -> FuzzResult:
    """``st run`` against the live schema; its exit status and output."""
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "tests.support.fuzz_hooks",
        "MAAS_FUZZ_PROTECTED_KEYS": ",".join(map(str, principal.key_ids)),
        "MAAS_FUZZ_PROTECTED_USERS": ",".join(map(str, principal.user_ids)),
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        f"{base_url}/api/openapi.json",
        "--header",
        f"Authorization: Bearer {principal.token}",
        "--checks",
        ",".join(CHECKS),
        "--max-examples",
        str(max_examples),
        *(("--max-time", str(max_time)) if max_time else ()),
        "--phases",
        phases,
        "--generation-database",
        "none",
        "--request-timeout",
        "30",
        "--no-color",
        *extra,
    ]
    # Run in a scratch folder: schemathesis keeps a cache in its working directory.
    with tempfile.TemporaryDirectory(prefix="maas-fuzz-") as scratch:
        process = await asyncio.create_subprocess_exec(
            *command,
            cwd=scratch,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            output, _ = await asyncio.wait_for(process.communicate(), deadline_s)
        except TimeoutError:
            process.kill()
            output, _ = await process.communicate()
            return FuzzResult(
                -1, output.decode(errors="replace") + f"\n(stopped after {deadline_s} s)"
            )
    return FuzzResult(process.returncode or 0, output.decode(errors="replace"))
