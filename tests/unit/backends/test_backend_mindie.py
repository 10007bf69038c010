"""MindIE's generated service configuration and the launch file that carries it."""

from __future__ import annotations

import json
from typing import Any

import pytest

from maasbase.backends.launch import LaunchContext, LaunchError, Runtime, build_launch_spec
from maasbase.backends.mindie import MINDIE_FLAGS, MindIEParameterError, mindie_config
from maasbase.backends.registry import BackendRegistry, builtin_definitions
from maasbase.common.errors import InvalidRequest

REGISTRY = BackendRegistry(builtin_definitions())
CONFIG_PATH = "/var/lib/maas/instances/7/mindie-config.json"


def context(**overrides: Any) -> LaunchContext:
    values: dict[str, Any] = {
        "model_path": "/models/Qwen2.5-7B-Instruct",
        "model_name": "qwen2.5-7b",
        "host": "0.0.0.0",
        "port": 40001,
        "vendor": "ascend",
        "gpu_ids": [4, 5],
        "data_dir": "/var/lib/maas/instances/7",
    }
    return LaunchContext(**(values | overrides))


def spec_for(ctx: LaunchContext) -> Any:
    return build_launch_spec(REGISTRY.get("mindie"), ctx, which=lambda name: f"/bin/{name}")


def test_two_npus_are_numbered_as_the_process_sees_them() -> None:
    spec = spec_for(context())
    config = json.loads(spec.files[CONFIG_PATH])
    backend = config["BackendConfig"]
    model = backend["ModelDeployConfig"]["ModelConfig"][0]
    assert spec.env["ASCEND_RT_VISIBLE_DEVICES"] == "4,5"
    assert backend["npuDeviceIds"] == [[0, 1]]
    assert model["worldSize"] == 2
    assert config["Version"] == "1.0.0"


def test_containers_also_number_npus_from_zero() -> None:
    spec = spec_for(context(runtime=Runtime.CONTAINER, gpu_ids=[3]))
    config = json.loads(spec.files[CONFIG_PATH])
    assert spec.env["ASCEND_RT_VISIBLE_DEVICES"] == "0"
    assert config["BackendConfig"]["npuDeviceIds"] == [[0]]


def test_server_model_and_limits_are_placed() -> None:
    config = mindie_config(context(context_length=16384), port=40001)
    server = config["ServerConfig"]
    assert server["ipAddress"] == "0.0.0.0"
    assert server["allowAllZeroIpListening"] is True
    assert server["port"] == server["managementPort"] == server["metricsPort"] == 40001
    assert server["httpsEnabled"] is False
    assert server["inferMode"] == "standard"
    assert server["openAiSupport"] == "vllm"
    deploy = config["BackendConfig"]["ModelDeployConfig"]
    assert deploy["maxSeqLen"] == deploy["maxInputTokenLen"] == 16384
    assert deploy["truncation"] is False
    model = deploy["ModelConfig"][0]
    assert model["modelName"] == "qwen2.5-7b"
    assert model["modelWeightPath"] == "/models/Qwen2.5-7B-Instruct"
    assert model["npuMemSize"] == -1
    assert model["backendType"] == "atb"
    assert model["trustRemoteCode"] is False
    schedule = config["BackendConfig"]["ScheduleConfig"]
    assert schedule["templateType"] == "Standard"
    assert schedule["cacheBlockSize"] == 128
    assert schedule["maxPrefillTokens"] == schedule["maxIterTimes"] == 16384


def test_a_specific_host_disallows_all_zero_listening() -> None:
    server = mindie_config(context(host="10.0.0.5"), port=40001)["ServerConfig"]
    assert server["ipAddress"] == server["managementIpAddress"] == "10.0.0.5"
    assert server["allowAllZeroIpListening"] is False


def test_sequence_length_defaults_to_8192() -> None:
    deploy = mindie_config(context(), port=40001)["BackendConfig"]["ModelDeployConfig"]
    assert deploy["maxSeqLen"] == 8192


def test_parameters_override_documented_knobs_and_never_reach_argv() -> None:
    params = [
        "--max-seq-len=4096",
        "--max-input-token-len 2048",
        "--max_batch_size",
        "64",
        "--max-prefill-tokens=8192",
        "--log-level=debug",
        "--trust-remote-code",
    ]
    spec = spec_for(context(backend_parameters=params, context_length=32768))
    assert spec.args == []
    config = json.loads(spec.files[CONFIG_PATH])
    deploy = config["BackendConfig"]["ModelDeployConfig"]
    schedule = config["BackendConfig"]["ScheduleConfig"]
    assert (deploy["maxSeqLen"], deploy["maxInputTokenLen"]) == (4096, 2048)
    assert (schedule["maxBatchSize"], schedule["maxPrefillTokens"]) == (64, 8192)
    assert schedule["maxIterTimes"] == 4096
    assert deploy["ModelConfig"][0]["trustRemoteCode"] is True
    assert config["LogConfig"]["logLevel"] == "Debug"


def test_an_unknown_flag_is_refused_with_the_accepted_ones() -> None:
    with pytest.raises(MindIEParameterError) as caught:
        spec_for(context(backend_parameters=["--tensor-parallel-size", "2"]))
    assert isinstance(caught.value, InvalidRequest)
    assert "'--tensor-parallel-size'" in caught.value.message
    assert all(flag in caught.value.message for flag in MINDIE_FLAGS)
    assert caught.value.details["flag"] == "--tensor-parallel-size"


@pytest.mark.parametrize(
    "params",
    [
        ["--max-seq-len", "zero"],
        ["--max-seq-len=1024", "--max-input-token-len=2048"],
        ["--max-prefill-tokens=100"],
        ["--log-level=loud"],
        ["--trust-remote-code=yes"],
        ["--max-batch-size"],
    ],
)
def test_invalid_values_are_refused(params: list[str]) -> None:
    with pytest.raises(MindIEParameterError):
        mindie_config(context(backend_parameters=params), port=40001)


def test_the_spec_carries_exactly_the_config_file() -> None:
    spec = spec_for(context())
    assert list(spec.files) == [CONFIG_PATH]
    assert (
        spec.files[CONFIG_PATH] == json.dumps(mindie_config(context(), port=40001), indent=2) + "\n"
    )


def test_other_backends_carry_no_files() -> None:
    ctx = context(vendor="nvidia")
    assert build_launch_spec(REGISTRY.get("vllm"), ctx, which=lambda n: f"/bin/{n}").files == {}


def test_a_relative_config_path_is_refused() -> None:
    with pytest.raises(LaunchError, match="MIES_CONFIG_JSON_PATH"):
        spec_for(context(env={"MIES_CONFIG_JSON_PATH": "mindie.json"}))
