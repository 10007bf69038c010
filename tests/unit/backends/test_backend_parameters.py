"""User backend parameters: overriding defaults and templates, and what is refused."""

from __future__ import annotations

from typing import Any

import pytest

from maasbase.backends.definition import (
    BackendDefinition,
    ParameterError,
    ReservedParameterError,
    flatten_parameters,
    group_parameters,
)
from maasbase.backends.launch import LaunchContext, build_launch_spec
from maasbase.backends.registry import BackendRegistry, builtin_definitions
from maasbase.common.errors import InvalidRequest

REGISTRY = BackendRegistry(builtin_definitions())
VLLM_HEAD = [
    "vllm",
    "serve",
    "/models/m",
    "--host",
    "0.0.0.0",
    "--port",
    "8000",
    "--served-model-name",
    "m",
    "--tensor-parallel-size",
    "1",
    "--pipeline-parallel-size",
    "1",
]


def vllm_argv(*params: str, **overrides: Any) -> list[str]:
    values: dict[str, Any] = {
        "model_path": "/models/m",
        "model_name": "m",
        "host": "0.0.0.0",
        "port": 8000,
        "vendor": "nvidia",
        "gpu_ids": [0],
        "backend_parameters": list(params),
    }
    ctx = LaunchContext(**(values | overrides))
    return build_launch_spec(REGISTRY.get("vllm"), ctx, which=lambda _: "/bin/vllm").argv


def llama_argv(*params: str) -> list[str]:
    ctx = LaunchContext(
        model_path="/m.gguf",
        model_name="m",
        host="127.0.0.1",
        port=9000,
        context_length=4096,
        backend_parameters=list(params),
    )
    return build_launch_spec(
        REGISTRY.get("llama.cpp"), ctx, which=lambda _: "/bin/llama-server"
    ).argv


def test_defaults_apply_when_the_user_sets_nothing() -> None:
    assert vllm_argv() == [*VLLM_HEAD, "--gpu-memory-utilization", "0.9"]


def test_user_value_replaces_a_default_with_the_same_flag() -> None:
    assert vllm_argv("--gpu-memory-utilization", "0.75") == [
        *VLLM_HEAD,
        "--gpu-memory-utilization",
        "0.75",
    ]


@pytest.mark.parametrize(
    "params",
    [
        ["--max-model-len", "4096"],
        ["--max-model-len=4096"],
        ["--max_model_len", "4096"],
        ["--max-model-len 4096"],
    ],
)
def test_user_max_model_len_replaces_the_platform_one(params: list[str]) -> None:
    result = vllm_argv(*params, context_length=32768)
    assert "32768" not in result
    assert [t for t in result if "max" in t and "model" in t] == [params[0].split(" ")[0]]
    assert result[-len(flatten_parameters(params)) :] == flatten_parameters(params)


def test_boolean_flags_are_appended_and_values_keep_their_tokens() -> None:
    assert vllm_argv("--enable-prefix-caching", "--max-num-seqs", "64") == [
        *VLLM_HEAD,
        "--gpu-memory-utilization",
        "0.9",
        "--enable-prefix-caching",
        "--max-num-seqs",
        "64",
    ]


def test_negative_numbers_are_values_not_flags() -> None:
    assert llama_argv("--seed", "-1")[-2:] == ["--seed", "-1"]


def test_no_prefix_replaces_the_positive_flag() -> None:
    definition = BackendDefinition(
        name="demo",
        supported_vendors=["cpu"],
        executable=["demo"],
        command=["--port", "{port}"],
        default_parameters=["--enable-prefix-caching", "--dtype", "auto"],
    )
    ctx = LaunchContext(
        model_path="/m",
        model_name="m",
        host="h",
        port=1,
        backend_parameters=["--no-enable-prefix-caching"],
    )
    assert build_launch_spec(definition, ctx).argv == [
        "demo",
        "--port",
        "1",
        "--dtype",
        "auto",
        "--no-enable-prefix-caching",
    ]


def test_llama_cpp_aliases_count_as_the_same_flag() -> None:
    assert llama_argv("--ctx-size", "1024", "--parallel", "8") == [
        "llama-server",
        "-m",
        "/m.gguf",
        "--host",
        "127.0.0.1",
        "--port",
        "9000",
        "--alias",
        "m",
        "--metrics",
        "-ngl",
        "0",
        "--ctx-size",
        "1024",
        "--parallel",
        "8",
    ]


def test_users_may_override_the_platform_tensor_parallel_size() -> None:
    result = vllm_argv("-tp", "1", gpu_ids=[0, 1])
    assert "--tensor-parallel-size" not in result
    assert result[-2:] == ["-tp", "1"]


@pytest.mark.parametrize(
    "params",
    [
        ["--port", "9999"],
        ["--port=9999"],
        ["--host", "127.0.0.1"],
        ["--served-model-name", "other"],
        ["--served_model_name=other"],
        ["--model", "/etc/passwd"],
    ],
)
def test_platform_flags_are_refused_for_vllm(params: list[str]) -> None:
    with pytest.raises(ReservedParameterError) as caught:
        vllm_argv(*params)
    assert "set by the platform" in caught.value.message
    assert isinstance(caught.value, InvalidRequest)


@pytest.mark.parametrize("params", [["-a", "x"], ["--alias=x"], ["-m", "/x.gguf"], ["--port", "1"]])
def test_platform_flags_are_refused_for_llama_cpp(params: list[str]) -> None:
    with pytest.raises(ReservedParameterError):
        llama_argv(*params)


def test_a_positional_parameter_is_refused() -> None:
    with pytest.raises(ParameterError, match="is not a flag"):
        vllm_argv("/other/model")


def test_shell_syntax_reaches_the_engine_as_literal_arguments() -> None:
    result = vllm_argv("--chat-template", "$(reboot); rm -rf / && echo {port}")
    assert result[-2:] == ["--chat-template", "$(reboot); rm -rf / && echo {port}"]


def test_flatten_splits_one_string_entries_with_quotes() -> None:
    assert flatten_parameters(
        ["--ctx-size 1024", "--hf-overrides '{\"a\": 1}'", "--x=a b", "  ", "--flag"]
    ) == ["--ctx-size", "1024", "--hf-overrides", '{"a": 1}', "--x=a b", "--flag"]


def test_unbalanced_quotes_are_a_typed_error() -> None:
    with pytest.raises(ParameterError, match="cannot parse"):
        flatten_parameters(['--chat-template "unterminated'])


def test_grouping_keeps_multi_value_flags_together() -> None:
    assert group_parameters(["/m", "--lora-modules", "a=/a", "b=/b", "--x=1", "--y"]) == [
        ["/m"],
        ["--lora-modules", "a=/a", "b=/b"],
        ["--x=1"],
        ["--y"],
    ]
