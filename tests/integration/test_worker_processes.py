"""A real server and two real worker processes with simulated GPUs."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pytest

from tests.support.processes import (
    MAAS,
    Api,
    free_port,
    process,
    read_json,
    spawn,
    stop,
    wait_until,
)

pytestmark = pytest.mark.integration

PASSWORD = "admin-password-1"
TIMEOUT = 3.0


def _worker_args(base: str, token: str, name: str, data: Path, gpus: str) -> list[str]:
    return [
        "worker", "--server-url", base, "--token", token, "--name", name,
        "--data-dir", str(data), "--worker-port", str(free_port()),
        "--simulate-gpus", gpus, "--labels", f"node={name}",
    ]  # fmt: skip


def test_two_workers_join_follow_liveness_and_reattach(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server_dir = tmp_path / "server"
    server_args = [
        "start", "--no-worker", "--port", str(port), "--data-dir", str(server_dir),
        "--database-url", f"sqlite:///{tmp_path / 'maas.db'}", "--bootstrap-password", PASSWORD,
        "--worker-timeout", str(TIMEOUT), "--heartbeat-interval", "0.5",
    ]  # fmt: skip
    with process(*server_args, log=tmp_path / "server.log") as server:

        def server_ready() -> bool:
            try:
                return httpx.get(f"{base}/readyz", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(server_ready, timeout=60, what="the server")
        token = (server_dir / "token").read_text().strip()
        api = Api(base, PASSWORD)

        w1_args = _worker_args(base, token, "w1", tmp_path / "w1", "4xH100:80")
        w2_args = _worker_args(base, token, "w2", tmp_path / "w2", "mixed-4090-4080")
        w1 = spawn(*w1_args, log=tmp_path / "w1.log")
        with process(*w2_args, log=tmp_path / "w2.log") as w2:

            def states() -> dict[str, str]:
                return {w["name"]: w["state"] for w in api.get("/api/v1/workers")["items"]}

            wait_until(
                lambda: states() == {"w1": "ready", "w2": "ready"},
                timeout=30,
                what="both workers ready",
            )
            workers = {w["name"]: w for w in api.get("/api/v1/workers")["items"]}
            assert [g["name"] for g in workers["w1"]["hardware"]["gpus"]] == ["H100"] * 4
            assert {g["memory_total"] for g in workers["w1"]["hardware"]["gpus"]} == {80 * 1024**3}
            assert workers["w1"]["labels"] == {"node": "w1"}
            assert all(g["simulated"] for g in workers["w2"]["hardware"]["gpus"])
            assert len(api.get("/api/v1/gpus")["items"]) == 4 + len(
                workers["w2"]["hardware"]["gpus"]
            )
            w1_id = workers["w1"]["id"]

            # The credential the worker was issued is not the shared token and cannot
            # call admin APIs.
            identity = read_json(tmp_path / "w1" / "worker" / "identity.json")
            assert identity["credential"] != token
            denied = httpx.get(
                f"{base}/api/v1/users",
                headers={"Authorization": f"Bearer {identity['credential']}"},
            )
            assert denied.status_code == 403

            # The worker API answers the server's secret only.
            worker_api = f"http://127.0.0.1:{workers['w1']['port']}/healthz"
            assert httpx.get(worker_api).status_code == 401
            auth = {"Authorization": f"Bearer {identity['api_secret']}"}
            assert httpx.get(worker_api, headers=auth).status_code == 200

            # Killing w1 makes it unreachable after the timeout; w2 stays ready.
            w1.kill()
            w1.wait()
            wait_until(
                lambda: states() == {"w1": "unreachable", "w2": "ready"},
                timeout=TIMEOUT + 10,
                what="w1 unreachable",
            )

            # Restarting w1 from the same data dir, without the token, re-attaches.
            restart = [a for a in w1_args if a != token and a != "--token"]
            with process(*restart, log=tmp_path / "w1-again.log") as w1_again:
                wait_until(
                    lambda: states() == {"w1": "ready", "w2": "ready"}, timeout=30, what="w1 back"
                )
                assert api.get("/api/v1/workers")["total"] == 2
                assert {w["name"]: w["id"] for w in api.get("/api/v1/workers")["items"]}[
                    "w1"
                ] == w1_id
                assert stop(w1_again) == 0
            assert stop(w2) == 0
        assert stop(server) == 0


def test_wrong_token_and_unreachable_server_fail_clearly(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server_dir = tmp_path / "server"
    with process(
        "start", "--no-worker", "--port", str(port), "--data-dir", str(server_dir),
        "--database-url", f"sqlite:///{tmp_path / 'maas.db'}", "--bootstrap-password", PASSWORD,
        log=tmp_path / "server.log",
    ) as server:  # fmt: skip
        wait_until(lambda: (server_dir / "token").exists(), timeout=60, what="token file")
        _fails_clearly(
            _worker_args(base, "wrong-token", "w9", tmp_path / "w9", "H100:80"),
            "wrong registration token",
        )
        stop(server)
    _fails_clearly(
        [*_worker_args(base, "any", "w8", tmp_path / "w8", "H100:80"), "--connect-timeout", "2"],
        "cannot reach the server",
    )
    _fails_clearly(_worker_args(base, "any", "w7", tmp_path / "w7", "4xH100"), "bad GPU spec")


def _fails_clearly(args: list[str], message: str) -> None:
    """The command exits 1 with ``message`` and no traceback."""
    result = subprocess.run([MAAS, *args], capture_output=True, text=True, timeout=60)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert message in output
    assert "Traceback" not in output
