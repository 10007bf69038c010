"""A real server and a real standalone gateway: the gateway exchanges the registration
token for its own credential, keeps it under --data-dir, and carries on when the token
is rotated."""

from __future__ import annotations

import stat
from pathlib import Path

import httpx
import pytest

from tests.support.processes import Api, free_port, process, start_args, wait_ready, wait_until

pytestmark = pytest.mark.integration

PASSWORD = "admin-password-1"


def gateway_ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def test_gateway_registers_with_the_token_and_survives_its_rotation(tmp_path: Path) -> None:
    port, gateway_port = free_port(), free_port()
    base = f"http://127.0.0.1:{port}"
    gateway_url = f"http://127.0.0.1:{gateway_port}"
    with process(*start_args(tmp_path, port, PASSWORD, "--no-worker"), log=tmp_path / "s.log"):
        wait_ready(base)
        token = (tmp_path / "data" / "token").read_text().strip()
        api = Api(base, PASSWORD)
        gateway_dir = tmp_path / "gateway"
        gateway_args = [
            "gateway", "--server-url", base, "--token", token, "--host", "127.0.0.1",
            "--port", str(gateway_port), "--data-dir", str(gateway_dir), "--name", "edge-1",
        ]  # fmt: skip
        with process(*gateway_args, log=tmp_path / "g1.log"):
            wait_until(lambda: gateway_ready(gateway_url), timeout=30, what="the gateway")
            [gateway] = api.get("/api/v1/gateways")["items"]
            assert gateway["name"] == "edge-1"
            assert gateway["last_seen_at"] is not None
            identity = gateway_dir / "gateway" / "identity.json"
            assert stat.S_IMODE(identity.stat().st_mode) == 0o600
            assert token not in identity.read_text()

            rotated = api.call("POST", "/api/v1/cluster/registration-token")
            assert rotated.status_code == 200, rotated.text
            assert (tmp_path / "data" / "token").read_text().strip() == rotated.json()["token"]

            # Key checks still reach the control plane with the gateway's own credential.
            created = api.call("POST", "/api/v1/api-keys", json={"name": "app", "scope": "all"})
            key = created.json()["key"]
            models = httpx.get(
                f"{gateway_url}/v1/models", headers={"Authorization": f"Bearer {key}"}
            )
            assert models.status_code == 200, models.text

        # A restart with the old token re-attaches with the stored credential.
        with process(*gateway_args, log=tmp_path / "g2.log"):
            wait_until(lambda: gateway_ready(gateway_url), timeout=30, what="the gateway again")
            assert [g["id"] for g in api.get("/api/v1/gateways")["items"]] == [gateway["id"]]
