"""The gateway against a control plane over HTTP: the HTTP seams in-process, then the
standalone gateway as real processes (one, and two sharing limits through Redis).

``FakeControlPlane`` is a fake of the server's gateway endpoints (aiohttp, real port):
``GET /api/v1/gateway/routes`` (long poll), ``POST /api/v1/gateway/keys/check``,
``POST /api/v1/gateway/usage``, all behind the gateway's credential, which a gateway
gets from ``POST /api/v1/gateways/register`` for the registration token.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import signal
import stat
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import openai
import pytest
import redis.asyncio as aioredis
from aiohttp import web

from maasbase.common.errors import ConfigurationError
from maasbase.common.routing import KeyGrant, KeyLimits, RoutingTable, UsageBatch, UsageRecord
from maasbase.gateway import identity
from maasbase.gateway.app import create_gateway_app
from maasbase.gateway.auth import HttpKeyResolver
from maasbase.gateway.config import GatewayConfig
from maasbase.gateway.control import ControlPlaneClient
from maasbase.gateway.fakes import grant, routing_table
from maasbase.gateway.identity import GatewayIdentity
from maasbase.gateway.limits_redis import PREFIX
from maasbase.gateway.metering import HttpUsageSink
from maasbase.gateway.routing import HttpRoutingSource
from maasbase.gateway.testing import StubUpstream, listening_socket, serving

pytestmark = pytest.mark.integration

TOKEN = "registration-token"
CREDENTIAL = "mbg_0123456789abcdef_gateway-secret"
CHAT = [{"role": "user", "content": "hi"}]


class FakeControlPlane:
    def __init__(self, table: RoutingTable, keys: dict[str, KeyGrant]) -> None:
        self.table = table
        self.keys = keys
        self.batches: list[UsageBatch] = []
        self.usage_down = False  # answer usage batches with 503
        self.route_polls = 0
        self.registrations: list[tuple[str, str]] = []  # (bearer, name)
        self._changed = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.url = ""

    @property
    def records(self) -> list[UsageRecord]:
        return [r for b in self.batches for r in b.records]

    def set_table(self, table: RoutingTable) -> None:
        self.table = table
        self._changed.set()
        self._changed = asyncio.Event()

    def _authorized(self, request: web.Request) -> None:
        if request.headers.get("Authorization") != f"Bearer {CREDENTIAL}":
            raise web.HTTPUnauthorized()

    async def _register(self, request: web.Request) -> web.Response:
        bearer = request.headers.get("Authorization", "").removeprefix("Bearer ")
        name = (await request.json())["name"]
        self.registrations.append((bearer, name))
        if bearer not in (TOKEN, CREDENTIAL):
            return web.json_response({"error": {"message": "wrong token"}}, status=401)
        return web.json_response({"id": 3, "name": name, "credential": CREDENTIAL})

    async def _routes(self, request: web.Request) -> web.Response:
        self._authorized(request)
        self.route_polls += 1
        if request.query.get("revision") == self.table.revision:
            changed = self._changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), float(request.query.get("wait", "20")))
        return web.Response(text=self.table.model_dump_json(), content_type="application/json")

    async def _check(self, request: web.Request) -> web.Response:
        self._authorized(request)
        found = self.keys.get((await request.json())["key"])
        if found is None:
            return web.json_response({"detail": "invalid key"}, status=401)
        return web.Response(text=found.model_dump_json(), content_type="application/json")

    async def _usage(self, request: web.Request) -> web.Response:
        self._authorized(request)
        if self.usage_down:
            return web.Response(status=503)
        self.batches.append(UsageBatch.model_validate_json(await request.read()))
        return web.Response(status=204)

    async def start(self) -> str:
        app = web.Application()
        app.router.add_get("/api/v1/gateway/routes", self._routes)
        app.router.add_post("/api/v1/gateway/keys/check", self._check)
        app.router.add_post("/api/v1/gateway/usage", self._usage)
        app.router.add_post("/api/v1/gateways/register", self._register)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        sock = listening_socket()
        site = web.SockSite(self._runner, sock)
        await site.start()
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        return self.url

    async def aclose(self) -> None:
        self._changed.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


@pytest.fixture
async def stub() -> AsyncIterator[StubUpstream]:
    upstream = StubUpstream()
    await upstream.start()
    yield upstream
    await upstream.aclose()


@pytest.fixture
async def control(stub: StubUpstream) -> AsyncIterator[FakeControlPlane]:
    plane = FakeControlPlane(routing_table("r1", {"m": [stub.base_url]}), {"sk": grant(7)})
    await plane.start()
    yield plane
    await plane.aclose()


async def eventually_true(check: Callable[[], bool], within: float = 3.0) -> None:
    for _ in range(int(within / 0.02)):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached in time")


async def test_http_seams_follow_routes_check_keys_and_send_usage(
    control: FakeControlPlane, stub: StubUpstream
) -> None:
    routes = HttpRoutingSource(control.url, CREDENTIAL, wait=5)
    keys = HttpKeyResolver(control.url, CREDENTIAL)
    usage = HttpUsageSink(control.url, CREDENTIAL)
    config = GatewayConfig(usage_flush_interval=0.05)
    app = create_gateway_app(routes=routes, keys=keys, usage=usage, config=config)
    try:
        async with (
            serving(app) as url,
            openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="sk", max_retries=0) as sdk,
        ):
            await sdk.chat.completions.create(model="m", messages=CHAT)  # type: ignore[arg-type]
            stream = await sdk.chat.completions.create(model="m", messages=CHAT, stream=True)  # type: ignore[arg-type]
            assert len([c async for c in stream]) == 7
            with pytest.raises(openai.AuthenticationError):
                async with openai.AsyncOpenAI(
                    base_url=f"{url}/v1", api_key="sk-unknown", max_retries=0
                ) as wrong:
                    await wrong.models.list()
            await eventually_true(lambda: len(control.records) == 2)
            tokens = [(r.prompt_tokens, r.completion_tokens, r.stream) for r in control.records]
            assert tokens == [(7, 5, False), (7, 5, True)]
            assert {r.api_key_id for r in control.records} == {7}

            control.set_table(routing_table("r2", {"m": [stub.base_url], "n": [stub.base_url]}))
            await eventually_true(lambda: app.holder.snapshot.revision == "r2", within=1.0)
            await sdk.chat.completions.create(model="n", messages=CHAT)  # type: ignore[arg-type]

            await control.aclose()  # the control plane goes down
            await sdk.chat.completions.create(model="n", messages=CHAT)  # type: ignore[arg-type]
            assert app.holder.snapshot.revision == "r2"
    finally:
        await routes.aclose()
        await keys.aclose()
        await usage.aclose()


async def test_a_rejected_gateway_token_is_a_configuration_error(
    control: FakeControlPlane,
) -> None:
    routes = HttpRoutingSource(control.url, "wrong-token", wait=1)
    try:
        with pytest.raises(ConfigurationError, match="--token"):
            await routes.watch(None)
    finally:
        await routes.aclose()


def tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:]


@asynccontextmanager
async def gateway_process(
    server_url: str, port: int, log: Path, *extra: str, token: str = TOKEN
) -> AsyncIterator[asyncio.subprocess.Process]:
    """A standalone gateway process (its data folder beside ``log``); stopped with
    SIGTERM while this loop keeps serving the fake control plane (which receives the
    gateway's last usage batch)."""
    command = ["-m", "maasbase.gateway.standalone", "--server-url", server_url,
               "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(log.parent),
               *extra]  # fmt: skip
    with log.open("wb") as handle:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            *command,
            env={**os.environ, "MAAS_GATEWAY_TOKEN": token},
            stdout=handle,
            stderr=handle,
        )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
                raise AssertionError(f"the gateway ignored SIGTERM:\n{tail(log)}") from None


async def wait_ready(url: str, proc: asyncio.subprocess.Process, log: Path) -> None:
    async with httpx.AsyncClient() as http:
        for _ in range(300):
            assert proc.returncode is None, tail(log)
            try:
                if (await http.get(f"{url}/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError(f"gateway not ready:\n{tail(log)}")


def free_port() -> int:
    sock = listening_socket()
    port: int = sock.getsockname()[1]
    sock.close()
    return port


async def test_standalone_gateway_process(control: FakeControlPlane, tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "gateway.log"
    async with gateway_process(control.url, port, log) as proc:
        await wait_ready(url, proc, log)
        async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="sk", max_retries=0) as sdk:
            reply = await sdk.chat.completions.create(model="m", messages=CHAT)  # type: ignore[arg-type]
            assert reply.usage is not None
            assert reply.usage.total_tokens == 12
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 10)
    assert len(control.records) == 1  # sent at the latest when the gateway stops
    # Registered once with the token; every later call used the gateway's credential.
    [(bearer, name)] = control.registrations
    assert bearer == TOKEN
    # With --data-dir the name is the host's: the kept credential re-attaches on restart.
    assert name == identity.default_name(persistent=True)
    # Without one, a random suffix keeps restarts from colliding.
    suffixed = identity.default_name(persistent=False)
    assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*-[0-9a-f]{6}", suffixed), suffixed


async def test_standalone_gateway_keeps_its_credential_in_its_data_dir(
    control: FakeControlPlane, tmp_path: Path
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    data_dir = tmp_path / "gw"
    args = ("--data-dir", str(data_dir), "--name", "edge-1")
    for n in range(2):
        log = tmp_path / f"gateway-{n}.log"
        async with gateway_process(control.url, port, log, *args) as proc:
            await wait_ready(url, proc, log)
    # The first start registered with the token, the second re-attached with the
    # stored credential.
    assert control.registrations == [(TOKEN, "edge-1"), (CREDENTIAL, "edge-1")]
    identity = data_dir / "gateway" / "identity.json"
    assert stat.S_IMODE(identity.stat().st_mode) == 0o600
    assert json.loads(identity.read_text())["credential"] == CREDENTIAL

    # Given a gateway credential, the gateway uses it as it is.
    log = tmp_path / "direct.log"
    async with gateway_process(control.url, port, log, token=CREDENTIAL) as proc:
        await wait_ready(url, proc, log)
    assert len(control.registrations) == 2


async def test_a_refused_stored_credential_falls_back_to_the_token(
    control: FakeControlPlane, tmp_path: Path
) -> None:
    stale = GatewayIdentity(
        server_url=control.url, gateway_id=1, name="edge-1", credential="mbg_revoked"
    )
    identity.save(tmp_path, stale)
    client = ControlPlaneClient(control.url, TOKEN)
    try:
        credential = await identity.obtain_credential(client, TOKEN, name=None, data_dir=tmp_path)
        assert credential == CREDENTIAL
        assert control.registrations == [("mbg_revoked", "edge-1"), (TOKEN, "edge-1")]
        stored = identity.load(tmp_path)
        assert stored is not None
        assert stored.credential == CREDENTIAL
        with pytest.raises(ConfigurationError, match="refused the registration token"):
            await identity.obtain_credential(client, "wrong", name="edge-2", data_dir=None)
    finally:
        await client.aclose()


async def test_usage_the_server_did_not_take_survives_a_restart(
    control: FakeControlPlane, tmp_path: Path
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    control.usage_down = True
    async with gateway_process(control.url, port, tmp_path / "first.log") as proc:
        await wait_ready(url, proc, tmp_path / "first.log")
        async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="sk", max_retries=0) as sdk:
            for _ in range(3):
                await sdk.chat.completions.create(model="m", messages=CHAT)  # type: ignore[arg-type]
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    assert control.records == []
    spooled = list((tmp_path / "gateway-usage").glob("*/*.json"))
    print("spooled after the stop:", [path.name for path in spooled])
    assert spooled

    control.usage_down = False  # the server is back; so is the gateway
    async with gateway_process(control.url, port, tmp_path / "second.log") as proc:
        await wait_ready(url, proc, tmp_path / "second.log")
        await eventually_true(lambda: len(control.records) == 3, within=10)
    assert {r.api_key_id for r in control.records} == {7}
    assert list((tmp_path / "gateway-usage").glob("*/*.json")) == []


@pytest.fixture
def redis_url() -> str:
    url = os.environ.get("MAAS_TEST_REDIS_URL")
    if not url:
        if os.environ.get("MAAS_TEST_REQUIRE_ALL_DATABASES") == "1":
            pytest.fail("MAAS_TEST_REDIS_URL is not set but MAAS_TEST_REQUIRE_ALL_DATABASES=1")
        pytest.skip("MAAS_TEST_REDIS_URL is not set")
    return url


async def test_two_gateway_processes_share_limits_through_redis(
    control: FakeControlPlane, redis_url: str, tmp_path: Path
) -> None:
    key_id = random.randrange(10**9, 2 * 10**9)
    control.keys["sk-limited"] = grant(key_id, limits=KeyLimits(requests_per_minute=3))
    ports = [free_port(), free_port()]
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    try:
        async with (
            gateway_process(control.url, ports[0], logs[0], "--redis-url", redis_url) as a,
            gateway_process(control.url, ports[1], logs[1], "--redis-url", redis_url) as b,
        ):
            await wait_ready(urls[0], a, logs[0])
            await wait_ready(urls[1], b, logs[1])
            statuses = []
            async with httpx.AsyncClient() as http:
                for i in range(6):
                    response = await http.post(
                        f"{urls[i % 2]}/v1/chat/completions",
                        json={"model": "m", "messages": CHAT},
                        headers={"Authorization": "Bearer sk-limited"},
                    )
                    statuses.append(response.status_code)
                    if response.status_code == 429:
                        assert int(response.headers["retry-after"]) >= 1
                        assert json.loads(response.text)["error"]["code"] == "rate_limit_exceeded"
            assert statuses == [200, 200, 200, 429, 429, 429]
    finally:
        client = aioredis.Redis.from_url(redis_url)
        async for name in client.scan_iter(f"{PREFIX}:{{{key_id}}}:*"):
            await client.delete(name)
        await client.aclose()


async def test_standalone_gateway_with_two_worker_processes(
    control: FakeControlPlane, tmp_path: Path
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "workers.log"
    async with gateway_process(control.url, port, log, "--workers", "2") as proc:
        await wait_ready(url, proc, log)
        for _ in range(8):  # new connections: the kernel spreads them over both
            async with httpx.AsyncClient() as fresh:
                response = await fresh.post(
                    f"{url}/v1/chat/completions",
                    json={"model": "m", "messages": CHAT},
                    headers={"Authorization": "Bearer sk"},
                )
            assert response.status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    assert [bearer for bearer, _ in control.registrations] == [TOKEN]  # once for both
    async with httpx.AsyncClient() as http:
        with pytest.raises(httpx.ConnectError):
            await http.get(f"{url}/readyz")  # no worker was left behind
