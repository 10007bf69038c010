"""The engine runners: local process groups for real, containers against a fake engine
(and the real Docker SDK path failing cleanly here, where no engine runs)."""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

import psutil
import pytest

from maasbase.backends.container import ContainerEngineUnavailable, ContainerInfo, DockerRuntime
from maasbase.backends.definition import Vendor
from maasbase.backends.launch import LaunchContext, LaunchSpec, Runtime, build_launch_spec
from maasbase.backends.registry import BackendRegistry
from maasbase.worker.serving.containers import ContainerRunner
from maasbase.worker.serving.ports import PortAllocator
from maasbase.worker.serving.runner import LocalProcessRunner

REGISTRY = BackendRegistry.default()


def _spec(runtime: Runtime, tmp_path: Path) -> LaunchSpec:
    context = LaunchContext(
        model_path=str(tmp_path / "model.gguf"),
        model_name="m",
        host="127.0.0.1",
        port=40123,
        vendor=Vendor.NVIDIA,
        gpu_ids=[2, 3],
        data_dir=str(tmp_path),
        runtime=runtime,
    )
    return build_launch_spec(REGISTRY.get("vllm"), context, which=lambda _name: None)


def test_local_runner_stops_the_whole_process_group(tmp_path: Path) -> None:
    # An "engine" that forks a child and ignores nothing: both must go on stop.
    script = (
        "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', "
        "'import time; time.sleep(60)']); print('up', flush=True); time.sleep(60)"
    )
    spec = _spec(Runtime.PROCESS, tmp_path).model_copy(
        update={"executable": [sys.executable], "args": ["-c", script], "cwd": str(tmp_path)}
    )
    runner = LocalProcessRunner()
    log = tmp_path / "engine.log"
    handle = runner.start(spec, REGISTRY.get("vllm"), 1, log)
    deadline = time.monotonic() + 10
    while "up" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    children = psutil.Process(handle.pid).children(recursive=True)
    assert children, "the engine should have started a child"
    assert runner.exit_code(handle) is None
    runner.stop(handle, grace=5)
    assert runner.exit_code(handle) is not None
    assert not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children)


class FakeEngine:
    """In-memory stand-in for a Docker engine (test double)."""

    def __init__(self) -> None:
        self.runs: list[dict[str, object]] = []
        self.status = "running"
        self.stopped: list[str] = []
        self.removed: list[str] = []

    def ping(self) -> None:
        pass

    def run(self, run_kwargs: dict[str, object]) -> str:
        self.runs.append(run_kwargs)
        return "c0ffee" * 10

    def stop(self, container_id: str, *, timeout: float = 10.0) -> None:
        self.stopped.append(container_id)

    def remove(self, container_id: str, *, force: bool = False) -> None:
        self.removed.append(container_id)

    def list(self, instance_id: str | None = None) -> list[ContainerInfo]:
        return [ContainerInfo(id="c0ffee" * 10, name="x", status=self.status, image="i")]

    def logs(self, container_id: str, *, tail: int | None = 200) -> str:
        return "engine says hello\n"


def test_container_runner_with_a_fake_engine(tmp_path: Path) -> None:
    engine = FakeEngine()
    runner = ContainerRunner(engine)
    spec = _spec(Runtime.CONTAINER, tmp_path)
    log = tmp_path / "engine.log"
    handle = runner.start(spec, REGISTRY.get("vllm"), 7, log)
    [kwargs] = engine.runs
    assert str(kwargs["image"]).startswith("vllm/vllm-openai")
    assert kwargs["labels"]["maasbase.instance"] == "7"  # type: ignore[index]
    device_requests = kwargs["device_requests"]
    assert device_requests[0]["DeviceIDs"] == ["2", "3"]  # type: ignore[index]
    assert runner.exit_code(handle) is None
    deadline = time.monotonic() + 5
    while not (log.exists() and "hello" in log.read_text()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "engine says hello" in log.read_text()
    engine.status = "exited"
    assert runner.exit_code(handle) == -1
    runner.stop(handle, grace=3)
    assert engine.stopped == [handle.container_id]
    assert engine.removed == [handle.container_id]


def test_no_container_engine_is_a_clear_error() -> None:
    engine = DockerRuntime(base_url="unix:///nonexistent/docker.sock")
    with pytest.raises(ContainerEngineUnavailable, match=r"docker\.sock"):
        ContainerRunner(engine)


def test_local_runner_gives_the_engine_a_clean_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The worker's own secrets, as a real worker may have them in its environment.
    worker_secrets = {
        "MAAS_SECRET_KEY": "fernet-key-of-the-server",
        "MAAS_TOKEN": "registration-token",
        "MAAS_SOMETHING": "platform setting",
        "HF_TOKEN": "hf_worker_own_token",
        "AWS_SECRET_ACCESS_KEY": "aws-secret",
        "NCCL_DEBUG_KEY": "looks-secret-under-an-allowed-prefix",
        "DATABASE_URL": "postgresql://maas:pw@db/maas",
    }
    for name, value in worker_secrets.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("CUDA_HOME", "/usr/local/cuda")
    monkeypatch.setenv("LC_ALL", "C.UTF-8")
    dump = tmp_path / "environ.json"
    script = f"import json, os; open({str(dump)!r}, 'w').write(json.dumps(dict(os.environ)))"
    spec = _spec(Runtime.PROCESS, tmp_path)
    spec = spec.model_copy(
        update={
            "executable": [sys.executable],
            "args": ["-c", script],
            "cwd": str(tmp_path),
            "env": {**spec.env, "HF_TOKEN": "hf_the_model_own", "LOG_LEVEL": "debug"},
        }
    )
    runner = LocalProcessRunner()
    handle = runner.start(spec, REGISTRY.get("vllm"), 1, tmp_path / "engine.log")
    deadline = time.monotonic() + 20
    code = runner.exit_code(handle)
    while code is None and time.monotonic() < deadline:
        time.sleep(0.05)
        code = runner.exit_code(handle)
    assert code == 0, (tmp_path / "engine.log").read_text()
    environ: dict[str, str] = json.loads(dump.read_text())

    leaked = {k: v for k, v in environ.items() if v in worker_secrets.values()}
    assert leaked == {}
    assert not [name for name in environ if name.startswith("MAAS_")]
    # What the model and the backend ask for arrives; so does what an engine needs to run.
    assert environ["HF_TOKEN"] == "hf_the_model_own"
    assert environ["LOG_LEVEL"] == "debug"
    assert environ["CUDA_VISIBLE_DEVICES"] == "2,3"
    assert environ["CUDA_HOME"] == "/usr/local/cuda"
    assert environ["LC_ALL"] == "C.UTF-8"
    assert environ["PATH"] == os.environ["PATH"]


def test_container_runner_passes_only_the_launch_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAAS_SECRET_KEY", "fernet-key-of-the-server")
    monkeypatch.setenv("HF_TOKEN", "hf_worker_own_token")
    engine = FakeEngine()
    spec = _spec(Runtime.CONTAINER, tmp_path)
    runner = ContainerRunner(engine)
    handle = runner.start(spec, REGISTRY.get("vllm"), 7, tmp_path / "log")
    [kwargs] = engine.runs
    assert kwargs["environment"] == spec.env
    assert "fernet-key-of-the-server" not in str(kwargs)
    assert "hf_worker_own_token" not in str(kwargs)
    runner.stop(handle, grace=1)


def test_engines_listen_on_loopback_only() -> None:
    """The data-plane proxy is an engine's only way in: processes and host-network
    containers bind the host's loopback; a container in its own network namespace binds
    that namespace and is published on the host's loopback (``build_container_run_kwargs``)."""
    vllm = REGISTRY.get("vllm")
    assert LocalProcessRunner().listen_host(vllm) == "127.0.0.1"
    runner = ContainerRunner(FakeEngine())
    assert vllm.container.host_network
    assert runner.listen_host(vllm) == "127.0.0.1"
    bridged = vllm.model_copy(
        update={"container": vllm.container.model_copy(update={"host_network": False})}
    )
    assert runner.listen_host(bridged) == "0.0.0.0"


def test_ports_taken_on_loopback_are_skipped() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert PortAllocator(port, port + 1).allocate() == port + 1
