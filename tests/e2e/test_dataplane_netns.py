"""Seen from another host, an engine is reachable only through MaaS-Base.

A network namespace joined to this host by a veth pair plays the other host (a /30 used
only by this test). ``maas-base start`` listens on the host side of the pair and serves
llama.cpp. From inside the namespace: the engine's port refuses the connection, the
worker's data-plane proxy refuses a caller without its secret, and the gateway, with an
inference API key, answers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

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
HOST_ADDRESS, OTHER_ADDRESS = "10.213.91.1", "10.213.91.2"  # 10.213.91.0/30
COMMAND_SECONDS = 60

# Run inside the namespace: try each way in, print what happened as JSON.
PROBE = r"""
import json, socket, sys, urllib.error, urllib.request

host, engine_port, worker_port, gateway_port, instance_id, key = sys.argv[1:]

def connect(port):
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
        return "connected"
    except ConnectionRefusedError:
        return "refused"
    except OSError as exc:
        return f"error: {exc}"

def status(url, body=None, token=None):
    request = urllib.request.Request(url, data=body, method="POST" if body else "GET")
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")

chat = json.dumps({"model": "tiny", "max_tokens": 4,
                   "messages": [{"role": "user", "content": "Hello"}]}).encode()
proxy = f"http://{host}:{worker_port}/proxy/instances/{instance_id}/v1"
print(json.dumps({
    "engine": connect(engine_port),
    "worker_api": connect(worker_port),
    "proxy_without_secret": status(f"{proxy}/models"),
    "proxy_with_api_key": status(f"{proxy}/chat/completions", chat, key),
    "gateway": status(f"http://{host}:{gateway_port}/v1/chat/completions", chat, key),
}))
"""


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=COMMAND_SECONDS)


@pytest.fixture
def namespace() -> Iterator[str]:
    """A namespace with OTHER_ADDRESS, linked to this host's HOST_ADDRESS by a veth pair."""
    suffix = os.getpid() % 100_000
    name, host_side, other_side = f"maasdp{suffix}", f"mdp{suffix}h", f"mdp{suffix}n"
    added = subprocess.run(
        ["ip", "netns", "add", name], capture_output=True, text=True, timeout=COMMAND_SECONDS
    )
    if added.returncode != 0:
        pytest.skip(f"cannot create a network namespace here (needs root): {added.stderr}")
    try:
        _ip("link", "add", host_side, "type", "veth", "peer", "name", other_side)
        _ip("link", "set", other_side, "netns", name)
        _ip("addr", "add", f"{HOST_ADDRESS}/30", "dev", host_side)
        _ip("link", "set", host_side, "up")
        _ip("-n", name, "addr", "add", f"{OTHER_ADDRESS}/30", "dev", other_side)
        _ip("-n", name, "link", "set", other_side, "up")
        _ip("-n", name, "link", "set", "lo", "up")
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=COMMAND_SECONDS)
        subprocess.run(["ip", "link", "del", host_side], capture_output=True,
                       timeout=COMMAND_SECONDS)  # fmt: skip


def test_from_another_host_only_the_gateway_reaches_the_engine(
    namespace: str, tmp_path: Path
) -> None:
    port, worker_port = free_port(), free_port()
    args = start_args(tmp_path, port, PASSWORD, "--host", HOST_ADDRESS,
                      "--worker-port", str(worker_port), "--heartbeat-interval", "1")  # fmt: skip
    base = f"http://{HOST_ADDRESS}:{port}"
    model_file = write_tiny_gguf(tmp_path / "tiny.gguf")
    with process(*args, log=tmp_path / "maas.log") as proc:
        wait_ready(base)
        api = Api(base, PASSWORD)
        created = api.call(
            "POST",
            "/api/v1/models",
            json={
                "name": "tiny",
                "source": {"type": "local_path", "path": str(model_file)},
                "backend_parameters": ["-c", "256", "-np", "1"],
            },
        )
        assert created.status_code == 201, created.text
        model_id = created.json()["id"]
        wait_until(
            lambda: [i["state"] for i in api.instances(model_id)] == ["running"],
            timeout=90,
            what="the instance running",
        )
        [instance] = api.instances(model_id)
        key = api.call("POST", "/api/v1/api-keys", json={"name": "e2e", "scope": "inference"})
        assert key.status_code == 201, key.text

        probe = subprocess.run(
            ["ip", "netns", "exec", namespace, sys.executable, "-c", PROBE, HOST_ADDRESS,
             str(instance["port"]), str(worker_port), str(port), str(instance["id"]),
             key.json()["key"]],
            capture_output=True, text=True, timeout=COMMAND_SECONDS,
        )  # fmt: skip
        assert probe.returncode == 0, probe.stderr
        seen = json.loads(probe.stdout)
        assert stop(proc) == 0

    assert seen["engine"] == "refused"  # the engine listens on the worker's loopback only
    assert seen["worker_api"] == "connected"  # the same host answers on the worker's port
    status, body = seen["proxy_without_secret"]
    assert status == 401
    assert body["error"]["code"] == "unauthenticated"
    status, _ = seen["proxy_with_api_key"]
    assert status == 401  # an inference key is no data-plane secret
    status, body = seen["gateway"]
    assert status == 200, body
    assert body["choices"][0]["message"]["role"] == "assistant"
    assert body["usage"]["completion_tokens"] > 0
