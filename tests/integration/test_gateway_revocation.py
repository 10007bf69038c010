"""Revocation, user limits and refusal reasons through a gateway in front of the real
server: the in-process gateway of ``maas-base start`` (local seams), and a standalone
gateway process following the server over HTTP.

The delay from a revocation's 204 to the gateway's first refusal is printed (run with
``-s`` to see it); it is asserted only against a generous bound.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from maasbase.common.http_server import make_server
from maasbase.gateway.app import create_gateway_app
from maasbase.gateway.config import GatewayConfig
from maasbase.gateway.testing import StubUpstream, listening_socket, serving
from maasbase.server.gateway_link import LocalKeyChanges, LocalKeys, LocalRoutes, LocalUsage
from tests.integration.conftest import Harness
from tests.integration.test_gateway_standalone import free_port, gateway_process, wait_ready

pytestmark = pytest.mark.integration

PASSWORD = "alice-password-1"
CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
BOUND = 5.0  # seconds: far above the expected delay, only to keep a hang from passing


@pytest.fixture
async def stub() -> AsyncIterator[StubUpstream]:
    upstream = StubUpstream()
    await upstream.start()
    yield upstream
    await upstream.aclose()


@pytest.fixture
async def alice(
    harness: Harness, admin: httpx.AsyncClient, stub: StubUpstream
) -> AsyncIterator[httpx.AsyncClient]:
    """A user with a session; the model "m" is served by the stub, as a provider."""
    provider = await admin.post(
        "/api/v1/providers", json={"name": "stub", "base_url": stub.base_url, "models": ["m"]}
    )
    assert provider.status_code == 201, provider.text
    created = await admin.post("/api/v1/users", json={"username": "alice", "password": PASSWORD})
    assert created.status_code == 201, created.text
    async with harness.client(await harness.login("alice", PASSWORD)) as client:
        yield client


async def new_key(client: httpx.AsyncClient, name: str, **body: object) -> tuple[int, str]:
    response = await client.post("/api/v1/api-keys", json={"name": name, **body})
    assert response.status_code == 201, response.text
    return response.json()["id"], response.json()["key"]


@asynccontextmanager
async def in_process_gateway(harness: Harness) -> AsyncIterator[str]:
    state = harness.opened.state
    app = create_gateway_app(
        routes=LocalRoutes(state),
        keys=LocalKeys(state),
        usage=LocalUsage(state),
        key_changes=LocalKeyChanges(state),
        config=GatewayConfig(usage_flush_interval=0.05),
    )
    async with serving(app) as url:
        yield url


async def chat(http: httpx.AsyncClient, url: str, key: str) -> httpx.Response:
    return await http.post(
        f"{url}/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {key}"}
    )


async def first_refusal(http: httpx.AsyncClient, url: str, key: str) -> tuple[float, str]:
    """Send requests until one is refused with 401; when (monotonic) and the message."""
    deadline = time.monotonic() + BOUND
    while time.monotonic() < deadline:
        response = await chat(http, url, key)
        if response.status_code == 401:
            return time.monotonic(), response.json()["error"]["message"]
        assert response.status_code == 200, response.text
    raise AssertionError(f"the gateway still accepted the key {BOUND} s after it was revoked")


async def test_in_process_gateway_refuses_a_revoked_key_at_once_with_the_reason(
    harness: Harness, alice: httpx.AsyncClient
) -> None:
    key_id, key = await new_key(alice, "soon-revoked")
    expiring_id, expiring = await new_key(
        alice,
        "expiring",
        expires_at=(datetime.fromtimestamp(harness.clock.now(), UTC) + timedelta(hours=1))
        .isoformat(),
    )  # fmt: skip
    async with in_process_gateway(harness) as url, httpx.AsyncClient() as http:
        assert (await chat(http, url, key)).status_code == 200  # the grant is cached now
        revoked = await alice.delete(f"/api/v1/api-keys/{key_id}")
        assert revoked.status_code == 204
        answered = time.monotonic()
        refused_at, message = await first_refusal(http, url, key)
        print(f"\nin-process gateway: revoked key refused {refused_at - answered:.3f} s after 204")
        assert message.startswith("this API key was revoked at "), message

        harness.clock.advance(2 * 3600)  # the control plane's clock: the key has expired
        response = await chat(http, url, expiring)
        assert response.status_code == 401
        assert "this API key expired at " in response.json()["error"]["message"]
        assert expiring_id != key_id


async def test_user_limits_are_shared_by_all_keys_and_changes_apply_at_once(
    harness: Harness, admin: httpx.AsyncClient, alice: httpx.AsyncClient
) -> None:
    user_id = (await alice.get("/api/v1/users/me")).json()["id"]
    limited = await admin.patch(f"/api/v1/users/{user_id}", json={"rpm_limit": 3})
    assert limited.status_code == 200, limited.text
    _, first = await new_key(alice, "first", rpm_limit=10)
    _, second = await new_key(alice, "second")
    async with in_process_gateway(harness) as url, httpx.AsyncClient() as http:
        responses = [await chat(http, url, (first, second)[i % 2]) for i in range(5)]
        assert [r.status_code for r in responses] == [200, 200, 200, 429, 429]
        message = responses[3].json()["error"]["message"]
        assert "your user account (3 requests per minute, shared by all your API keys)" in message

        lifted = await admin.patch(f"/api/v1/users/{user_id}", json={"rpm_limit": None})
        assert lifted.status_code == 200
        deadline = time.monotonic() + BOUND
        while (await chat(http, url, second)).status_code == 429:
            assert time.monotonic() < deadline, "the lifted user limit did not reach the gateway"

        deactivated = await admin.patch(f"/api/v1/users/{user_id}", json={"is_active": False})
        assert deactivated.status_code == 200
        _, reason = await first_refusal(http, url, first)
        assert "deactivated" in reason


def server_token(harness: Harness) -> str:
    return (harness.settings.data_dir / "token").read_text().strip()


@asynccontextmanager
async def server_on_a_port(harness: Harness) -> AsyncIterator[str]:
    """The harness's server app on a real port, in this loop."""
    sock = listening_socket()
    server = make_server(harness.app)
    task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            assert not task.done(), "the server stopped before it started"
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        harness.opened.state.begin_shutdown()  # long polls answer at once
        server.should_exit = True
        await task
        sock.close()


@asynccontextmanager
async def gateway_url(server_url: str, token: str, log: Path) -> AsyncIterator[str]:
    """A standalone gateway process in front of ``server_url``, ready to serve."""
    port = free_port()
    async with gateway_process(server_url, port, log, token=token) as proc:
        url = f"http://127.0.0.1:{port}"
        await wait_ready(url, proc, log)
        yield url


async def test_standalone_gateway_refuses_a_revoked_key_within_a_second(
    harness: Harness, alice: httpx.AsyncClient, tmp_path: Path
) -> None:
    key_id, key = await new_key(alice, "revoked-over-http")
    async with (
        server_on_a_port(harness) as server_url,
        gateway_url(server_url, server_token(harness), tmp_path / "gateway.log") as url,
        httpx.AsyncClient() as http,
    ):
        for _ in range(3):
            assert (await chat(http, url, key)).status_code == 200
        # a client keeps sending while the key is revoked
        refusal = asyncio.ensure_future(first_refusal(http, url, key))
        await asyncio.sleep(0.2)
        revoked = await alice.delete(f"/api/v1/api-keys/{key_id}")
        answered = time.monotonic()
        assert revoked.status_code == 204
        refused_at, message = await refusal
        delay = refused_at - answered
        print(f"\nstandalone gateway: revoked key refused {delay:.3f} s after the 204")
        assert message.startswith("this API key was revoked at "), message
        assert delay < BOUND
