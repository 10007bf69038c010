"""Exact command lines for every built-in backend, as the engines would receive them."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from maasbase.backends.launch import DistributedInfo, LaunchContext, build_launch_spec
from maasbase.backends.registry import BackendRegistry, builtin_definitions

REGISTRY = BackendRegistry(builtin_definitions())


def on_path(name: str) -> str:
    return f"/usr/bin/{name}"


def not_on_path(name: str) -> None:
    return None


def context(**overrides: Any) -> LaunchContext:
    values: dict[str, Any] = {
        "model_path": "/models/Qwen2.5-7B-Instruct",
        "model_name": "qwen2.5-7b",
        "host": "0.0.0.0",
        "port": 40001,
        "data_dir": "/var/lib/maas/instances/7",
    }
    return LaunchContext(**(values | overrides))


def argv(backend: str, ctx: LaunchContext, which: Any = on_path) -> list[str]:
    return build_launch_spec(REGISTRY.get(backend), ctx, which=which).argv


def test_every_builtin_is_covered() -> None:
    assert REGISTRY.names() == [
        "custom",
        "llama.cpp",
        "mindie",
        "sglang",
        "tensorrt-llm",
        "vllm",
        "vox-box",
    ]


def test_vllm_two_gpus_with_context_length() -> None:
    ctx = context(vendor="nvidia", gpu_ids=[2, 3], context_length=8192)
    assert argv("vllm", ctx) == [
        "vllm",
        "serve",
        "/models/Qwen2.5-7B-Instruct",
        "--host",
        "0.0.0.0",
        "--port",
        "40001",
        "--served-model-name",
        "qwen2.5-7b",
        "--tensor-parallel-size",
        "2",
        "--pipeline-parallel-size",
        "1",
        "--max-model-len",
        "8192",
        "--gpu-memory-utilization",
        "0.9",
    ]


def test_vllm_across_two_workers_uses_ray() -> None:
    ctx = context(
        vendor="nvidia",
        gpu_ids=[0, 1],
        pp_size=2,
        distributed=DistributedInfo(world_size=2, node_rank=0, ray_address="10.0.0.5:6379"),
    )
    spec = build_launch_spec(REGISTRY.get("vllm"), ctx, which=on_path)
    assert spec.argv == [
        "vllm",
        "serve",
        "/models/Qwen2.5-7B-Instruct",
        "--host",
        "0.0.0.0",
        "--port",
        "40001",
        "--served-model-name",
        "qwen2.5-7b",
        "--tensor-parallel-size",
        "2",
        "--pipeline-parallel-size",
        "2",
        "--distributed-executor-backend",
        "ray",
        "--gpu-memory-utilization",
        "0.9",
    ]
    assert spec.env == {"RAY_ADDRESS": "10.0.0.5:6379", "CUDA_VISIBLE_DEVICES": "0,1"}


def test_sglang_single_gpu_embedding() -> None:
    ctx = context(vendor="nvidia", gpu_ids=[0], category="embedding", context_length=512)
    assert argv("sglang", ctx) == [
        "python3",
        "-m",
        "sglang.launch_server",
        "--model-path",
        "/models/Qwen2.5-7B-Instruct",
        "--host",
        "0.0.0.0",
        "--port",
        "40001",
        "--served-model-name",
        "qwen2.5-7b",
        "--tp-size",
        "1",
        "--pp-size",
        "1",
        "--enable-metrics",
        "--context-length",
        "512",
        "--is-embedding",
    ]


def test_sglang_multi_node_on_ascend() -> None:
    ctx = context(
        vendor="ascend",
        gpu_ids=[0, 1, 2, 3],
        distributed=DistributedInfo(world_size=2, node_rank=1, dist_init_addr="10.0.0.5:5000"),
    )
    assert argv("sglang", ctx) == [
        "python3",
        "-m",
        "sglang.launch_server",
        "--model-path",
        "/models/Qwen2.5-7B-Instruct",
        "--host",
        "0.0.0.0",
        "--port",
        "40001",
        "--served-model-name",
        "qwen2.5-7b",
        "--tp-size",
        "4",
        "--pp-size",
        "1",
        "--enable-metrics",
        "--nnodes",
        "2",
        "--node-rank",
        "1",
        "--dist-init-addr",
        "10.0.0.5:5000",
        "--attention-backend",
        "ascend",
    ]


LLAMA_CPU_ARGS = [
    "-m",
    "/models/tiny.gguf",
    "--host",
    "127.0.0.1",
    "--port",
    "40002",
    "--alias",
    "tiny",
    "--metrics",
    "-ngl",
    "0",
    "-c",
    "2048",
    "-np",
    "4",
]


def llama_cpu_context(**overrides: Any) -> LaunchContext:
    values: dict[str, Any] = {
        "model_path": "/models/tiny.gguf",
        "model_name": "tiny",
        "host": "127.0.0.1",
        "port": 40002,
        "context_length": 2048,
    }
    return LaunchContext(**(values | overrides))


def test_llama_cpp_uses_llama_server_when_on_path() -> None:
    assert argv("llama.cpp", llama_cpu_context()) == ["llama-server", *LLAMA_CPU_ARGS]


def test_llama_cpp_falls_back_to_the_embedded_server_with_the_same_flags() -> None:
    assert argv("llama.cpp", llama_cpu_context(), which=not_on_path) == [
        sys.executable,
        "-m",
        "maasbase.backends.llamacpp_launcher",
        *LLAMA_CPU_ARGS,
    ]


def test_llama_cpp_on_gpu_offloads_all_layers_and_serves_embeddings() -> None:
    ctx = llama_cpu_context(vendor="nvidia", gpu_ids=[1], category="embedding")
    assert argv("llama.cpp", ctx) == [
        "llama-server",
        "-m",
        "/models/tiny.gguf",
        "--host",
        "127.0.0.1",
        "--port",
        "40002",
        "--alias",
        "tiny",
        "--metrics",
        "-ngl",
        "999",
        "-c",
        "2048",
        "--embedding",
        "-np",
        "4",
    ]


def test_vox_box_on_one_gpu() -> None:
    ctx = context(model_path="/models/whisper-large-v3", vendor="nvidia", gpu_ids=[3])
    spec = build_launch_spec(
        REGISTRY.get("vox-box"),
        ctx.model_copy(update={"category": "speech-to-text"}),
        which=on_path,
    )
    assert spec.argv == [
        "vox-box",
        "start",
        "--model",
        "/models/whisper-large-v3",
        "--data-dir",
        "/var/lib/maas/instances/7",
        "--host",
        "0.0.0.0",
        "--port",
        "40001",
        "--device",
        "cuda:3",
    ]
    assert spec.env == {"CUDA_VISIBLE_DEVICES": "3"}


def test_vox_box_on_cpu() -> None:
    ctx = context(model_path="/models/whisper-tiny", category="speech-to-text")
    assert argv("vox-box", ctx) == [
        "vox-box",
        "start",
        "--model",
        "/models/whisper-tiny",
        "--data-dir",
        "/var/lib/maas/instances/7",
        "--host",
        "0.0.0.0",
        "--port",
        "40001",
        "--device",
        "cpu",
    ]


def test_mindie_is_configured_through_its_environment() -> None:
    spec = build_launch_spec(
        REGISTRY.get("mindie"), context(vendor="ascend", gpu_ids=[4, 5]), which=on_path
    )
    assert spec.argv == ["/usr/local/Ascend/mindie/latest/mindie-service/bin/mindieservice_daemon"]
    assert spec.env == {
        "MIES_INSTALL_PATH": "/usr/local/Ascend/mindie/latest/mindie-service",
        "MIES_CONFIG_JSON_PATH": "/var/lib/maas/instances/7/mindie-config.json",
        "MIES_SERVICE_MONITOR_MODE": "1",
        "MINDIE_LLM_CONTINUOUS_BATCHING": "1",
        "MINDIE_LOG_TO_STDOUT": "1",
        "ASCEND_RT_VISIBLE_DEVICES": "4,5",
    }
    assert spec.health_path == "/v2/health/ready"


def test_tensorrt_llm_trtllm_serve() -> None:
    ctx = context(vendor="nvidia", gpu_ids=[0, 1, 2, 3], context_length=32768)
    assert argv("tensorrt-llm", ctx) == [
        "trtllm-serve",
        "serve",
        "/models/Qwen2.5-7B-Instruct",
        "--host",
        "0.0.0.0",
        "--port",
        "40001",
        "--tp_size",
        "4",
        "--pp_size",
        "1",
        "--max_seq_len",
        "32768",
        "--backend",
        "pytorch",
        "--kv_cache_free_gpu_memory_fraction",
        "0.9",
    ]


def test_custom_backend_renders_the_models_own_command() -> None:
    ctx = context(
        vendor="amd",
        gpu_ids=[0],
        run_command=["my-server", "--weights", "{model_path}", "--listen={host}:{port}"],
        backend_parameters=["--batch", "8"],
    )
    spec = build_launch_spec(REGISTRY.get("custom"), ctx, which=on_path)
    assert spec.argv == [
        "my-server",
        "--weights",
        "/models/Qwen2.5-7B-Instruct",
        "--listen=0.0.0.0:40001",
        "--batch",
        "8",
    ]
    assert spec.health_path == "/v1/models"


@pytest.mark.parametrize(
    ("backend", "health", "metrics"),
    [
        ("vllm", "/health", "/metrics"),
        ("sglang", "/health", "/metrics"),
        ("llama.cpp", "/health", "/metrics"),
        ("vox-box", "/health", None),
        ("tensorrt-llm", "/health", None),
    ],
)
def test_health_and_metrics_paths(backend: str, health: str, metrics: str | None) -> None:
    definition = REGISTRY.get(backend)
    assert definition.health_path == health
    assert definition.metrics.path == metrics
