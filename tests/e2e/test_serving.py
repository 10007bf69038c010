"""Serving for real on CPU: deploy a tiny GGUF through the API, llama.cpp answers through
the gateway and the worker's data-plane proxy (the engine listens on loopback only), a
crash is reported and restarted with backoff, logs stream, deleting stops the process."""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from tests.support.processes import (
    Api,
    free_port,
    process,
    start_args,
    stop,
    wait_ready,
    wait_until,
)
from tests.support.tiny_gguf import write_tiny_gguf

pytestmark = pytest.mark.e2e

PASSWORD = "admin-password-1"


def _args(tmp_path: Path, port: int, worker_port: int) -> list[str]:
    extra = ("--worker-port", str(worker_port), "--heartbeat-interval", "1")
    return start_args(tmp_path, port, PASSWORD, *extra)


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[Api]:
    port = free_port()
    with process(*_args(tmp_path, port, free_port()), log=tmp_path / "maas.log") as proc:
        wait_ready(f"http://127.0.0.1:{port}")
        yield Api(f"http://127.0.0.1:{port}", PASSWORD)
        assert stop(proc) == 0


def _inference_client(platform: Api) -> httpx.Client:
    """A client of the platform's OpenAI-compatible API with a fresh inference key."""
    key = platform.call("POST", "/api/v1/api-keys", json={"name": "e2e", "scope": "inference"})
    assert key.status_code == 201, key.text
    headers = {"Authorization": f"Bearer {key.json()['key']}"}
    return httpx.Client(base_url=f"{platform.base}/v1", headers=headers, timeout=60)


def _listening_addresses(pid: int, port: int) -> set[str]:
    """The addresses the process listens on at ``port``."""
    return {
        c.laddr.ip
        for c in psutil.Process(pid).net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN and c.laddr.port == port
    }


def _port_free(port: int) -> bool:
    """Free for a new server (which, like every server, sets SO_REUSEADDR)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def test_deploy_chat_crash_restart_logs_delete(platform: Api, tmp_path: Path) -> None:
    model_file = write_tiny_gguf(tmp_path / "tiny.gguf")
    response = platform.call(
        "POST",
        "/api/v1/models",
        json={
            "name": "tiny",
            "source": {"type": "local_path", "path": str(model_file)},
            "backend": "llama.cpp",
            "backend_parameters": ["-c", "512", "-np", "1"],
        },
    )
    assert response.status_code == 201, response.text
    model_id = response.json()["id"]

    def running(restarts: int = 0) -> bool:
        items = platform.instances(model_id)
        return (
            len(items) == 1
            and items[0]["state"] == "running"
            and items[0]["restart_count"] == restarts
        )

    wait_until(running, timeout=90, what="the instance running")
    [instance] = platform.instances(model_id)
    # The engine is reachable on the worker's loopback only; the gateway reaches it
    # through the worker's data-plane proxy.
    assert _listening_addresses(instance["pid"], instance["port"]) == {"127.0.0.1"}
    with _inference_client(platform) as client:
        chat = client.post(
            "/chat/completions",
            json={
                "model": "tiny",
                "messages": [{"role": "user", "content": "Hello"}],
                "max_tokens": 8,
            },
        )
        # The engine says what context one request gets (-c 512 over one slot); a prompt
        # that cannot fit in it is refused by the gateway before the engine sees it.
        huge = client.post(
            "/chat/completions",
            json={"model": "tiny", "messages": [{"role": "user", "content": "x" * 70_000}]},
        )
    assert chat.status_code == 200, chat.text
    body = chat.json()
    assert body["choices"][0]["message"]["role"] == "assistant"
    assert body["usage"]["completion_tokens"] > 0
    assert instance["context_length"] == 512
    assert huge.status_code == 400, huge.text
    error = huge.json()["error"]
    assert error["code"] == "context_length_exceeded"
    assert "512 tokens of context" in error["message"]

    logs = platform.call(
        "GET", f"/api/v1/model-instances/{instance['id']}/logs", params={"tail": 50}
    )
    assert logs.status_code == 200
    assert logs.text.strip(), "the engine log should not be empty"
    with httpx.stream(
        "GET",
        f"{platform.base}/api/v1/model-instances/{instance['id']}/logs",
        params={"tail": 5, "follow": True},
        headers=platform.headers,
        timeout=10,
    ) as streamed:
        assert streamed.status_code == 200
        first = next(streamed.iter_text())
        assert first

    # Crash the engine: the worker reports the error with the log tail, the controller
    # restarts it after the backoff.
    os.killpg(instance["pid"], signal.SIGKILL)
    wait_until(
        lambda: platform.instances(model_id)[0]["state"] == "error",
        timeout=30,
        what="the crash reported",
    )
    failed = platform.instances(model_id)[0]
    assert "exited" in failed["state_message"]
    assert failed["next_restart_at"] is not None
    wait_until(lambda: running(restarts=1), timeout=90, what="the restart")
    [restarted] = platform.instances(model_id)
    assert restarted["pid"] != instance["pid"]

    assert platform.call("DELETE", f"/api/v1/models/{model_id}").status_code == 204
    wait_until(
        lambda: not psutil.pid_exists(restarted["pid"]), timeout=30, what="the engine process gone"
    )
    wait_until(lambda: _port_free(restarted["port"]), timeout=10, what="the port freed")


def test_catalog_embedding_model_is_converted_and_served(platform: Api) -> None:
    """all-MiniLM-L6-v2 ships as safetensors; the worker converts it to GGUF for llama.cpp."""
    from tests.support.bert_reference import minilm_folder  # skips or fails when missing

    minilm_folder()
    response = platform.call("POST", "/api/v1/catalog/all-minilm-l6-v2/deploy", json={})
    assert response.status_code == 201, response.text
    model = response.json()
    assert model["categories"] == ["embedding"]

    def running() -> bool:
        items = platform.instances(model["id"])
        return bool(items) and items[0]["state"] == "running"

    wait_until(running, timeout=120, what="the embedding model running")
    with _inference_client(platform) as client:
        result = client.post(
            "/embeddings",
            json={"model": "all-minilm-l6-v2", "input": ["A man is playing a guitar."]},
        )
    assert result.status_code == 200, result.text
    vector = result.json()["data"][0]["embedding"]
    assert len(vector) == 384


def test_restarted_worker_adopts_its_running_engine(tmp_path: Path) -> None:
    """A worker killed hard leaves its engine running; the restarted worker adopts it (and a
    later delete still stops it), so nothing leaks."""
    port = free_port()
    args = _args(tmp_path, port, free_port())
    base = f"http://127.0.0.1:{port}"

    model_file = write_tiny_gguf(tmp_path / "tiny.gguf")
    with process(*args, log=tmp_path / "first.log") as first:
        wait_ready(base)
        platform = Api(base, PASSWORD)
        model_id = platform.call(
            "POST",
            "/api/v1/models",
            json={
                "name": "tiny",
                "source": {"type": "local_path", "path": str(model_file)},
                "backend_parameters": ["-c", "256", "-np", "1"],
            },
        ).json()["id"]
        wait_until(
            lambda: platform.instances(model_id)[0]["state"] == "running",
            timeout=90,
            what="running",
        )
        [before] = platform.instances(model_id)
        first.kill()  # no clean shutdown: the engine keeps running on its own
        first.wait()
    assert psutil.pid_exists(before["pid"])

    with process(*args, log=tmp_path / "second.log") as second:
        wait_ready(base)
        platform = Api(base, PASSWORD)

        def adopted() -> bool:
            [item] = platform.instances(model_id)
            return item["state"] == "running" and "adopted" in item["state_message"]

        wait_until(adopted, timeout=60, what="the engine adopted")
        [after] = platform.instances(model_id)
        assert after["pid"] == before["pid"]
        assert after["port"] == before["port"]
        assert platform.call("DELETE", f"/api/v1/models/{model_id}").status_code == 204
        wait_until(
            lambda: not psutil.pid_exists(before["pid"]),
            timeout=30,
            what="the adopted engine stopped",
        )
        assert stop(second) == 0
