"""Who may call what: every route that ``maas-base start`` serves (the control plane and
the gateway's ``/v1`` on one port) × every kind of caller, against ``authz_rules.RULES``.

The route table is read from the live apps; a route without a rule, or a rule without a
route, fails. Each cell is one request that only authorization can refuse: 401 and 403
are refusals, any other status means the request got past authorization.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import fastapi.routing
import httpx
import pytest
from fastapi import FastAPI
from starlette.types import ASGIApp

from maasbase.cli.serve import combine, gateway_path, local_gateway
from maasbase.gateway.app import GatewayApp
from maasbase.server.authn import SESSION_COOKIE
from tests.integration import authz_rules as r
from tests.integration.authz_rules import RULES, Context, Outcome, Rule
from tests.integration.conftest import ADMIN_PASSWORD, Harness
from tests.integration.test_workers import registration

pytestmark = pytest.mark.integration

Cell = tuple[str, str, str]  # method, path template, principal


@dataclass
class World:
    """The app ``maas-base start`` serves, the objects the requests name, and one
    credential per principal."""

    harness: Harness
    gateway: GatewayApp
    app: ASGIApp
    values: dict[str, Any] = field(default_factory=dict)
    bearers: dict[str, str | None] = field(default_factory=dict)

    def client(self, principal: str) -> httpx.AsyncClient:
        headers = {}
        if principal == r.ADMIN_COOKIE:
            headers["cookie"] = f"{SESSION_COOKIE}={self.values['admin_session']}"
        elif (bearer := self.bearers[principal]) is not None:
            headers["authorization"] = f"Bearer {bearer}"
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url="http://maas.test",
            headers=headers,
        )  # fmt: skip


async def gateway_credential(world: World, admin: httpx.AsyncClient) -> str:
    """The gateway identity, and the gateways the requests name."""
    world.values["gateway_name"] = "matrix-gateway"
    created = await _created(admin, "/api/v1/gateways", {"name": "matrix-gateway"})
    doomed = await _created(admin, "/api/v1/gateways", {"name": "matrix-doomed"})
    world.values.update(gateway_id=created["id"], doomed_gateway_id=doomed["id"])
    credential: str = created["credential"]
    return credential


# the route table ---------------------------------------------------------------------


def _server_routes(app: FastAPI) -> Iterable[tuple[str, str]]:
    iterate = getattr(fastapi.routing, "iter_route_contexts", None)
    routes: Iterable[Any] = iterate(app.routes) if iterate else app.routes
    for route in routes:
        path: str = route.path
        methods: set[str] | None = getattr(route, "methods", None)
        if methods is None:  # a mount (static files): any path under it
            yield "GET", path.rstrip("/") + "/{path}"
            continue
        for method in methods:
            if not (method == "HEAD" and "GET" in methods):
                yield method, path


def served_routes(server: FastAPI, gateway: GatewayApp) -> set[tuple[str, str]]:
    """(method, path template) of every route the combined app answers."""
    found = {(m, p) for m, p in _server_routes(server) if not gateway_path(p)}
    found |= {(m, p) for m, p in gateway.endpoints() if gateway_path(p)}
    return found


# the principals and the objects the requests name --------------------------------------


async def _key(client: httpx.AsyncClient, name: str, **extra: object) -> tuple[str, int]:
    response = await client.post("/api/v1/api-keys", json={"name": name, **extra})
    assert response.status_code == 201, response.text
    created = response.json()
    return created["key"], created["id"]


async def _created(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post(path, json=body)
    assert response.status_code in (200, 201), response.text
    created: dict[str, Any] = response.json()
    return created


async def _populate(world: World, tmp: Path) -> None:
    harness, values, bearers = world.harness, world.values, world.bearers
    values["admin_session"] = admin_session = await harness.login("admin", ADMIN_PASSWORD)
    values["user_name"] = "matrix-user"
    values["registration_token"] = token = (harness.settings.data_dir / "token").read_text().strip()
    values["registration"] = registration("unused")
    weights = tmp / "matrix.gguf"
    weights.write_bytes(b"")
    values["model_body"] = {"name": r.MODEL, "backend": "llama.cpp", "replicas": 0,
                            "source": {"type": "local_path", "path": str(weights)}}  # fmt: skip
    bearers.update({r.ANONYMOUS: None, r.GARBAGE: "not-a-real-token", r.ADMIN_COOKIE: None})
    async with harness.client(admin_session) as admin:
        user = {"username": values["user_name"], "password": r.PASSWORD}
        values["user_id"] = (await _created(admin, "/api/v1/users", user))["id"]
        doomed = {"username": "matrix-doomed", "password": r.PASSWORD}
        values["doomed_user_id"] = (await _created(admin, "/api/v1/users", doomed))["id"]
        bearers[r.ADMIN_KEY_ALL], _ = await _key(admin, "all")
        bearers[r.ADMIN_KEY_MANAGEMENT], _ = await _key(admin, "mgmt", scope="management")
        bearers[r.ADMIN_KEY_INFERENCE], _ = await _key(admin, "inf", scope="inference")
        values["model_id"] = (await _created(admin, "/api/v1/models", values["model_body"]))["id"]
        doomed_model = {**values["model_body"], "name": "matrix-doomed"}
        values["doomed_model_id"] = (await _created(admin, "/api/v1/models", doomed_model))["id"]
        provider = {"name": "matrix", "base_url": "http://127.0.0.1:9/v1", "models": ["remote"]}
        values["provider_id"] = (await _created(admin, "/api/v1/providers", provider))["id"]
        provider["name"] = "matrix-doomed"
        values["doomed_provider_id"] = (await _created(admin, "/api/v1/providers", provider))["id"]
        bearers[r.GATEWAY] = await gateway_credential(world, admin)
    user_session = await harness.login(values["user_name"], r.PASSWORD)
    now = datetime.fromtimestamp(harness.clock.now(), UTC)
    async with harness.client(user_session) as user_client:
        bearers[r.USER_KEY_ALL], values["key_id"] = await _key(user_client, "all")
        bearers[r.USER_KEY_MANAGEMENT], _ = await _key(user_client, "mgmt", scope="management")
        bearers[r.USER_KEY_INFERENCE], _ = await _key(user_client, "inf", scope="inference")
        bearers[r.USER_KEY_MODELS], _ = await _key(
            user_client, "models", allowed_models=["other-model"]
        )
        expires = (now + timedelta(hours=1)).isoformat()
        bearers[r.EXPIRED_KEY], _ = await _key(user_client, "expiring", expires_at=expires)
        bearers[r.REVOKED_KEY], revoked = await _key(user_client, "revoked")
        assert (await user_client.delete(f"/api/v1/api-keys/{revoked}")).status_code == 204
        _, values["doomed_key_id"] = await _key(user_client, "doomed")
    async with harness.client(token) as registrar:
        worker = await _created(registrar, "/api/v1/workers/register", registration("matrix"))
        doomed_worker = await _created(
            registrar, "/api/v1/workers/register", registration("matrix-doomed")
        )
    values.update(worker_name="matrix", worker_id=worker["id"])
    values["doomed_worker_id"] = doomed_worker["id"]
    bearers.update({
        r.ADMIN_SESSION: admin_session, r.USER_SESSION: user_session,
        r.WORKER: worker["credential"], r.REGISTRATION_TOKEN: token,
    })  # fmt: skip
    values.update({
        "checked_key": bearers[r.USER_KEY_ALL], "instance_id": 1, "entry": "no-such-entry",
        "name": "vllm", "absent_backend": "no-such-backend", "model": r.MODEL,
        "path": "no-such-file",
    })  # fmt: skip
    harness.clock.advance(2 * 3600)  # past the expiring key's lifetime, within the sessions'


@pytest.fixture
async def world(harness: Harness, tmp_path: Path) -> AsyncIterator[World]:
    gateway = local_gateway(harness.settings, harness.opened)
    world = World(harness, gateway, combine(harness.app, gateway))
    await gateway.start()
    try:
        await _populate(world, tmp_path)
        await gateway.routes_loaded()
        yield world
    finally:
        await gateway.aclose()


# the requests --------------------------------------------------------------------------

_PARAMETER = re.compile(r"\{(\w+)(?::\w+)?\}")


def _url(path: str, rule: Rule, values: dict[str, Any]) -> str:
    return _PARAMETER.sub(lambda m: str(values[rule.ids.get(m[1], m[1])]), path)


async def _send(world: World, client: httpx.AsyncClient, cell: Cell, serial: int) -> int:
    method, path, principal = cell
    rule = RULES[(method, path)]
    context = Context(principal, serial, world.values)
    request: dict[str, Any] = {"params": rule.params}
    if rule.form:
        request["data"] = {"model": r.MODEL}
        request["files"] = {"file": ("a.wav", b"RIFF0000WAVE", "audio/wav")}
    elif (body := rule.body(context)) is not None:
        request["json"] = body
    response = await client.request(method, _url(path, rule, world.values), **request)
    client.cookies.clear()  # a login must not turn later requests into a session
    if response.status_code in (401, 403):
        assert response.json()["error"]["message"], response.text
    return response.status_code


async def _run(world: World, cells: list[Cell]) -> list[tuple[Cell, Outcome, int]]:
    """Send every cell; the ones whose status the rules do not accept."""
    mismatches = []
    clients = {p: world.client(p) for p in {cell[2] for cell in cells}}
    try:
        for serial, cell in enumerate(cells):
            status = await _send(world, clients[cell[2]], cell, serial)
            expected = RULES[cell[:2]].expected(cell[2])
            if not expected.accepts(status):
                mismatches.append((cell, expected, status))
    finally:
        for client in clients.values():
            await client.aclose()
    return mismatches


def _table(mismatches: list[tuple[Cell, Outcome, int]]) -> str:
    rows = [f"{m:<6} {p:<46} {who:<32} expected {e.value:<10} got {s}"
            for (m, p, who), e, s in mismatches]  # fmt: skip
    return "\n".join(rows)


# the tests -----------------------------------------------------------------------------


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # the same on every database
async def test_every_route_has_a_rule(harness: Harness) -> None:
    gateway = local_gateway(harness.settings, harness.opened)
    try:
        served = served_routes(harness.app, gateway)
    finally:
        await gateway.aclose()
    unruled = [f"  no rule: {m} {p}" for m, p in sorted(served - RULES.keys())]
    stale = [f"  no route: {m} {p}" for m, p in sorted(RULES.keys() - served)]
    assert not unruled + stale, "tests/integration/authz_rules.py disagrees with the app:\n" + (
        "\n".join(unruled + stale)
    )


async def test_matrix(world: World) -> None:
    routes = sorted(served_routes(world.harness.app, world.gateway) & RULES.keys())
    # Principals in the outer loop: each keeps one client; DELETEs hit throwaway objects.
    cells = [(m, p, who) for phase in (0, 1, 2) for who in r.PRINCIPALS
             for m, p in routes if RULES[(m, p)].phase == phase]  # fmt: skip
    mismatches = await _run(world, cells)
    print(f"authorization matrix: {len(routes)} routes x {len(r.PRINCIPALS)} principals, "
          f"{len(cells)} cells checked")  # fmt: skip
    assert not mismatches, f"{len(mismatches)} cells disagree with the rules:\n" + _table(
        mismatches
    )


async def test_expired_and_revoked_keys_say_why(world: World) -> None:
    async with world.client(r.EXPIRED_KEY) as client:
        response = await client.get("/api/v1/users/me")
        assert response.status_code == 401
        assert "expired" in response.json()["error"]["message"]
    async with world.client(r.REVOKED_KEY) as client:
        response = await client.get("/api/v1/users/me")
        assert response.status_code == 401
        assert "revoked" in response.json()["error"]["message"]
    async with world.client(r.USER_KEY_INFERENCE) as client:
        response = await client.get("/api/v1/users/me")
        assert response.status_code == 403
        assert "scope 'inference'" in response.json()["error"]["message"]
    async with world.client(r.USER_KEY_MODELS) as client:
        response = await client.post("/v1/chat/completions", json=r.CHAT)
        assert response.status_code == 403
        assert "may not use model" in response.json()["error"]["message"]


async def test_deactivated_user_loses_access(world: World) -> None:
    async with world.client(r.ADMIN_SESSION) as admin:
        user_id = world.values["user_id"]
        response = await admin.patch(f"/api/v1/users/{user_id}", json={"is_active": False})
        assert response.is_success
    for caller in (r.USER_SESSION, r.USER_KEY_ALL):
        async with world.client(caller) as client:
            response = await client.get("/api/v1/users/me")
        assert response.status_code == 401
        assert "deactivated" in response.json()["error"]["message"]


async def test_a_deleted_users_session_does_not_pass_to_the_next_user(
    harness: Harness, admin: httpx.AsyncClient
) -> None:
    """SQLite gives a new row the largest deleted id again: the token's account claim,
    not the id alone, decides whose session it is."""
    body = {"username": "leaving", "password": r.PASSWORD}
    leaving = await _created(admin, "/api/v1/users", body)
    session = await harness.login("leaving", r.PASSWORD)
    assert (await admin.delete(f"/api/v1/users/{leaving['id']}")).status_code == 204
    body = {"username": "arriving", "password": r.PASSWORD, "is_admin": True}
    await _created(admin, "/api/v1/users", body)
    async with harness.client(session) as old:
        response = await old.get("/api/v1/users/me")
    assert response.status_code == 401, response.text
