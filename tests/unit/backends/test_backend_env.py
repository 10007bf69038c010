"""Environment, device visibility and the checks made before launching."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from maasbase.backends.definition import (
    ReservedParameterError,
    UnknownPlaceholderError,
    UnknownVersionError,
)
from maasbase.backends.launch import (
    DistributedInfo,
    LaunchContext,
    LaunchError,
    Runtime,
    build_launch_spec,
    device_env,
)
from maasbase.backends.registry import BackendRegistry, builtin_definitions

REGISTRY = BackendRegistry(builtin_definitions())


def spec_for(backend: str, **overrides: Any) -> Any:
    values: dict[str, Any] = {
        "model_path": "/models/m",
        "model_name": "m",
        "host": "0.0.0.0",
        "port": 8000,
        "data_dir": "/data/i1",
    }
    ctx = LaunchContext(**(values | overrides))
    return build_launch_spec(REGISTRY.get(backend), ctx, which=lambda name: f"/bin/{name}")


@pytest.mark.parametrize(
    ("backend", "vendor", "expected"),
    [
        ("vllm", "nvidia", {"CUDA_VISIBLE_DEVICES": "2,5"}),
        ("vllm", "amd", {"HIP_VISIBLE_DEVICES": "2,5"}),
        ("vllm", "ascend", {"ASCEND_RT_VISIBLE_DEVICES": "2,5"}),
        ("llama.cpp", "apple", {}),
    ],
)
def test_device_visibility_follows_the_vendor(
    backend: str, vendor: str, expected: dict[str, str]
) -> None:
    assert spec_for(backend, vendor=vendor, gpu_ids=[2, 5]).env == expected


def test_cpu_instances_get_no_device_variables() -> None:
    assert spec_for("llama.cpp").env == {}
    assert device_env("cpu", []) == {}  # type: ignore[arg-type]


def test_containers_see_their_nvidia_and_ascend_gpus_renumbered_from_zero() -> None:
    nvidia = spec_for("vllm", vendor="nvidia", gpu_ids=[2, 5], runtime="container")
    assert nvidia.env == {"CUDA_VISIBLE_DEVICES": "0,1"}
    assert nvidia.gpu_ids == [2, 5]
    ascend = spec_for("vllm", vendor="ascend", gpu_ids=[6], runtime="container")
    assert ascend.env == {"ASCEND_RT_VISIBLE_DEVICES": "0"}
    amd = spec_for("vllm", vendor="amd", gpu_ids=[2, 5], runtime="container")
    assert amd.env == {"HIP_VISIBLE_DEVICES": "2,5"}


def test_container_runtime_uses_the_image_entrypoint_not_the_host_fallback() -> None:
    spec = spec_for("llama.cpp", runtime=Runtime.CONTAINER)
    assert spec.executable == ["/app/llama-server"]
    assert spec.runtime is Runtime.CONTAINER


def test_user_env_overrides_definition_env() -> None:
    spec = spec_for(
        "mindie", vendor="ascend", gpu_ids=[0], env={"MIES_SERVICE_MONITOR_MODE": "0", "A": "b"}
    )
    assert spec.env["MIES_SERVICE_MONITOR_MODE"] == "0"
    assert spec.env["A"] == "b"


@pytest.mark.parametrize(
    "name", ["CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES"]
)
def test_users_cannot_pick_devices_through_env(name: str) -> None:
    with pytest.raises(ReservedParameterError, match="GPU selection"):
        spec_for("vllm", vendor="nvidia", gpu_ids=[0], env={name: "1"})


def test_invalid_env_names_are_refused() -> None:
    with pytest.raises(LaunchError, match="invalid environment variable name"):
        spec_for("vllm", vendor="nvidia", gpu_ids=[0], env={"A-B": "1"})


def test_unsupported_vendor_says_what_is_supported() -> None:
    with pytest.raises(LaunchError) as caught:
        spec_for("vllm")
    assert caught.value.message == (
        "backend 'vllm' does not run on cpu; it supports: nvidia, amd, ascend"
    )


def test_category_mismatch_is_refused() -> None:
    with pytest.raises(LaunchError, match="serves speech-to-text, text-to-speech, not llm models"):
        spec_for("vox-box")


def test_single_gpu_backend_refuses_two_gpus() -> None:
    with pytest.raises(LaunchError, match="at most 1 GPU"):
        spec_for("vox-box", category="speech-to-text", vendor="nvidia", gpu_ids=[0, 1])


def test_non_distributed_backend_refuses_spanning_workers() -> None:
    with pytest.raises(LaunchError, match="cannot span workers"):
        spec_for("llama.cpp", distributed=DistributedInfo(world_size=2, node_rank=0))


def test_missing_placeholder_value_names_the_placeholder() -> None:
    with pytest.raises(LaunchError, match=r"\{ray_address\}"):
        spec_for(
            "vllm",
            vendor="nvidia",
            gpu_ids=[0],
            distributed=DistributedInfo(world_size=2, node_rank=0),
        )
    with pytest.raises(LaunchError, match=r"\{data_dir\}"):
        spec_for("vox-box", category="speech-to-text", data_dir=None)


def test_custom_backend_requires_a_valid_run_command() -> None:
    with pytest.raises(LaunchError, match="needs a run command"):
        spec_for("custom")
    with pytest.raises(UnknownPlaceholderError, match=r"\{modelpath\}"):
        spec_for("custom", run_command=["srv", "{modelpath}"])
    with pytest.raises(LaunchError, match="builds its own command"):
        spec_for("llama.cpp", run_command=["srv"])


def test_unknown_version_lists_known_ones() -> None:
    ctx = LaunchContext(
        model_path="/m", model_name="m", host="h", port=1, vendor="nvidia", gpu_ids=[0]
    )
    with pytest.raises(UnknownVersionError, match=r"no version '0\.1'; known: 0\.11\.0, 0\.10\.2"):
        build_launch_spec(REGISTRY.get("vllm"), ctx, version="0.1")


@pytest.mark.parametrize(
    "bad",
    [
        {"vendor": "cpu", "gpu_ids": [0]},
        {"vendor": "nvidia", "gpu_ids": []},
        {"vendor": "nvidia", "gpu_ids": [1, 1]},
        {"port": 0},
        {"distributed": {"world_size": 2, "node_rank": 2}},
    ],
)
def test_inconsistent_contexts_are_rejected(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        LaunchContext(**({"model_path": "/m", "model_name": "m", "host": "h", "port": 1} | bad))


def test_spec_carries_readiness_facts() -> None:
    spec = spec_for("vllm", vendor="nvidia", gpu_ids=[0])
    assert spec.health_path == "/health"
    assert spec.ready_timeout == 900
    assert spec.cwd == "/data/i1"
    assert spec.local_url(spec.health_path) == "http://127.0.0.1:8000/health"
    assert spec_for("vllm", vendor="nvidia", gpu_ids=[0], host="::1").local_url() == (
        "http://[::1]:8000"
    )
