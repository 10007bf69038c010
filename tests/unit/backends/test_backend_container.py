"""Container specs per vendor, and a runtime that fails cleanly without an engine."""

from __future__ import annotations

import os
from typing import Any

import pytest
from docker.types import DeviceRequest

from maasbase.backends.container import (
    ContainerEngineUnavailable,
    ContainerSpecError,
    DockerRuntime,
    build_container_run_kwargs,
    container_name,
    engine_urls,
)
from maasbase.backends.definition import BackendDefinition
from maasbase.backends.launch import LaunchContext, LaunchSpec, build_launch_spec
from maasbase.backends.registry import BackendRegistry, builtin_definitions
from maasbase.common.errors import Unavailable

REGISTRY = BackendRegistry(builtin_definitions())


def container_spec(
    backend: str, version: str | None = None, **overrides: Any
) -> tuple[LaunchSpec, BackendDefinition]:
    values: dict[str, Any] = {
        "model_path": "/data/models/qwen",
        "model_name": "qwen",
        "host": "0.0.0.0",
        "port": 40100,
        "data_dir": "/data/instances/42",
        "runtime": "container",
    }
    definition = REGISTRY.get(backend)
    ctx = LaunchContext(**(values | overrides))
    return build_launch_spec(definition, ctx, version=version), definition


def test_nvidia_vllm_container() -> None:
    spec, definition = container_spec("vllm", vendor="nvidia", gpu_ids=[2, 3])
    kwargs = build_container_run_kwargs(spec, definition, instance_id="42")
    assert kwargs == {
        "image": "vllm/vllm-openai:v0.11.0",
        "name": "maasbase-42",
        "entrypoint": ["vllm", "serve"],
        "command": [
            "/data/models/qwen",
            "--host",
            "0.0.0.0",
            "--port",
            "40100",
            "--served-model-name",
            "qwen",
            "--tensor-parallel-size",
            "2",
            "--pipeline-parallel-size",
            "1",
            "--gpu-memory-utilization",
            "0.9",
        ],
        "environment": {"CUDA_VISIBLE_DEVICES": "0,1"},
        "device_requests": [DeviceRequest(device_ids=["2", "3"], capabilities=[["gpu"]])],
        "labels": {
            "maasbase.managed": "true",
            "maasbase.instance": "42",
            "maasbase.backend": "vllm",
            "maasbase.backend-version": "0.11.0",
        },
        "volumes": {
            "/data/models/qwen": {"bind": "/data/models/qwen", "mode": "ro"},
            "/data/instances/42": {"bind": "/data/instances/42", "mode": "rw"},
        },
        "shm_size": "10g",
        "ipc_mode": "host",
        "network_mode": "host",
        "detach": True,
        "init": True,
        "restart_policy": {"Name": "no"},
    }


def test_amd_container_passes_kfd_and_dri_and_keeps_host_numbering() -> None:
    spec, definition = container_spec("vllm", vendor="amd", gpu_ids=[1, 3], version="0.10.2")
    kwargs = build_container_run_kwargs(spec, definition, instance_id="a")
    assert kwargs["image"] == "gpustack/runner:rocm6.4-vllm0.10.2"
    assert kwargs["devices"] == ["/dev/kfd:/dev/kfd:rwm", "/dev/dri:/dev/dri:rwm"]
    assert kwargs["group_add"] == ["video"]
    assert kwargs["security_opt"] == ["seccomp=unconfined"]
    assert kwargs["environment"] == {"HIP_VISIBLE_DEVICES": "1,3"}
    assert "device_requests" not in kwargs


def test_ascend_container_mounts_chips_control_devices_and_driver() -> None:
    spec, definition = container_spec("mindie", vendor="ascend", gpu_ids=[4, 5])
    kwargs = build_container_run_kwargs(spec, definition, instance_id="m")
    assert kwargs["image"] == "gpustack/runner:cann8.2-910b-mindie2.1.rc2"
    assert kwargs["devices"] == [
        "/dev/davinci4:/dev/davinci4:rwm",
        "/dev/davinci5:/dev/davinci5:rwm",
        "/dev/davinci_manager:/dev/davinci_manager:rwm",
        "/dev/devmm_svm:/dev/devmm_svm:rwm",
        "/dev/hisi_hdc:/dev/hisi_hdc:rwm",
    ]
    assert kwargs["volumes"]["/usr/local/Ascend/driver"] == {
        "bind": "/usr/local/Ascend/driver",
        "mode": "ro",
    }
    assert kwargs["volumes"]["/data/models/qwen"]["mode"] == "ro"
    assert kwargs["environment"]["ASCEND_RT_VISIBLE_DEVICES"] == "0,1"
    assert kwargs["environment"]["MIES_CONFIG_JSON_PATH"] == "/data/instances/42/mindie-config.json"


def test_cpu_llama_cpp_container_has_no_devices() -> None:
    spec, definition = container_spec("llama.cpp", model_path="/data/models/tiny.gguf")
    kwargs = build_container_run_kwargs(spec, definition, instance_id="c", extra_labels={"a": "b"})
    assert kwargs["image"] == "ghcr.io/ggml-org/llama.cpp:server"
    assert kwargs["entrypoint"] == ["/app/llama-server"]
    assert kwargs["command"][:2] == ["-m", "/data/models/tiny.gguf"]
    assert kwargs["environment"] == {}
    assert kwargs["labels"]["a"] == "b"
    assert not {"devices", "device_requests", "ipc_mode"} & kwargs.keys()


def test_the_model_root_is_mounted_when_the_model_lives_inside_a_cache() -> None:
    snapshot = "/hf/models--Qwen--Qwen2.5-0.5B/snapshots/abc"
    spec, definition = container_spec(
        "vllm", vendor="nvidia", gpu_ids=[0], model_path=snapshot, model_root="/hf"
    )
    kwargs = build_container_run_kwargs(spec, definition, instance_id="h")
    assert kwargs["volumes"]["/hf"] == {"bind": "/hf", "mode": "ro"}
    assert snapshot not in kwargs["volumes"]
    assert kwargs["command"][0] == snapshot


def test_bridge_network_maps_the_port() -> None:
    definition = BackendDefinition.model_validate(
        {
            "name": "bridge",
            "supported_vendors": ["cpu"],
            "versions": {"1": {"image": "bridge:1"}},
            "default_version": "1",
            "executable": ["srv"],
            "command": ["--port", "{port}"],
            "container": {"host_network": False, "shm_size": "1g"},
        }
    )
    ctx = LaunchContext(
        model_path="/m", model_name="m", host="0.0.0.0", port=9000, runtime="container"
    )
    kwargs = build_container_run_kwargs(
        build_launch_spec(definition, ctx), definition, instance_id="b"
    )
    assert kwargs["ports"] == {"9000/tcp": ("127.0.0.1", 9000)}  # host loopback only
    assert "network_mode" not in kwargs
    assert kwargs["shm_size"] == "1g"


def test_apple_gpus_cannot_go_into_containers() -> None:
    spec, definition = container_spec("llama.cpp", vendor="apple", gpu_ids=[0])
    with pytest.raises(ContainerSpecError, match="run this backend as a process"):
        build_container_run_kwargs(spec, definition, instance_id="x")


def test_a_version_without_an_image_for_the_vendor_is_refused() -> None:
    spec, definition = container_spec("sglang", vendor="amd", gpu_ids=[0])
    with pytest.raises(ContainerSpecError, match="no container image for amd"):
        build_container_run_kwargs(spec, definition, instance_id="x")


def test_a_process_spec_is_refused() -> None:
    spec, definition = container_spec("llama.cpp", runtime="process")
    with pytest.raises(ContainerSpecError, match="runtime=container"):
        build_container_run_kwargs(spec, definition, instance_id="x")


def test_container_names_are_sanitized() -> None:
    assert container_name("model/7:a b") == "maasbase-model-7-a-b"


def test_engine_urls() -> None:
    assert engine_urls({"DOCKER_HOST": "tcp://10.0.0.1:2375"}) == ["tcp://10.0.0.1:2375"]
    assert engine_urls({}, uid=1000) == [
        "unix:///var/run/docker.sock",
        "unix:///run/podman/podman.sock",
        "unix:///run/user/1000/podman/podman.sock",
    ]
    assert engine_urls({"XDG_RUNTIME_DIR": "/run/user/5"})[-1] == (
        "unix:///run/user/5/podman/podman.sock"
    )


def test_runtime_without_an_engine_fails_with_a_typed_error() -> None:
    runtime = DockerRuntime("unix:///nonexistent/docker.sock")
    with pytest.raises(ContainerEngineUnavailable) as caught:
        runtime.ping()
    assert isinstance(caught.value, Unavailable)
    assert caught.value.retryable
    assert caught.value.message.startswith(
        "no container engine reachable at unix:///nonexistent/docker.sock (no such socket)"
    )
    with pytest.raises(ContainerEngineUnavailable):
        runtime.run({"image": "x"})
    with pytest.raises(ContainerEngineUnavailable):
        runtime.list()


@pytest.mark.skipif(
    any(os.path.exists(u.removeprefix("unix://")) for u in engine_urls(os.environ, os.getuid())),
    reason="a container engine socket exists on this machine",
)
def test_default_discovery_reports_every_place_it_looked() -> None:
    with pytest.raises(ContainerEngineUnavailable) as caught:
        DockerRuntime().ping()
    assert "unix:///var/run/docker.sock (no such socket)" in caught.value.message
    assert "DOCKER_HOST" in caught.value.message
