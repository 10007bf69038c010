"""`maas-base model ...` against a real server process."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.support.model_files import write_tiny_gguf
from tests.support.processes import MAAS, free_port, process, start_args, stop, wait_ready

pytestmark = pytest.mark.integration

PASSWORD = "admin-password-1"


def test_model_commands(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    args = start_args(tmp_path, port, PASSWORD, "--no-worker")
    with process(*args, log=tmp_path / "server.log") as server:
        wait_ready(base)
        token = httpx.post(
            f"{base}/api/v1/auth/login", json={"username": "admin", "password": PASSWORD}
        ).json()["access_token"]
        key = httpx.post(
            f"{base}/api/v1/api-keys",
            json={"name": "cli", "scope": "management"},
            headers={"Authorization": f"Bearer {token}"},
        ).json()["key"]
        env = {**os.environ, "MAAS_SERVER_URL": base, "MAAS_API_KEY": key, "COLUMNS": "200"}

        def cli(*command: str) -> str:
            result = subprocess.run(
                [MAAS, "model", *command], capture_output=True, text=True, env=env, timeout=60
            )
            assert result.returncode == 0, result.stdout + result.stderr
            return result.stdout + result.stderr

        model = write_tiny_gguf(tmp_path / "tiny.gguf")
        assert "deployed tiny" in cli(
            "deploy", "tiny", "--source", str(model), "--replicas", "2", "--param=-c",
            "--param=256", "--env", "HF_TOKEN=hf_cli_secret", "--env", "LOG_LEVEL=debug",
            "--env", "ORG_ID=org-7", "--secret-env", "ORG_ID",
        )  # fmt: skip
        assert "tiny" in cli("list")
        shown = cli("show", "tiny")
        assert shown.count("pending") == 2  # no worker: both wait, with the reason shown
        assert "LOG_LEVEL=debug" in shown
        assert "HF_TOKEN=(secret, set)" in shown
        assert "ORG_ID=(secret, set)" in shown
        assert "hf_cli_secret" not in shown
        assert "org-7" not in shown
        evaluation = cli("evaluate", "--source", str(model))
        assert "does not fit" in evaluation
        assert "2 replica" not in cli("scale", "tiny", "0")
        assert "deleted tiny" in cli("delete", "tiny")
        assert "tiny" not in cli("list")

        missing = subprocess.run(
            [MAAS, "model", "show", "nope"], capture_output=True, text=True, env=env, timeout=60
        )
        assert missing.returncode == 1
        assert "no model named 'nope'" in missing.stdout + missing.stderr
        no_key = subprocess.run(
            [MAAS, "model", "list"],
            capture_output=True,
            text=True,
            env={**env, "MAAS_API_KEY": ""},
            timeout=60,
        )
        assert no_key.returncode == 1
        assert "MAAS_API_KEY" in no_key.stdout + no_key.stderr
        assert stop(server) == 0
