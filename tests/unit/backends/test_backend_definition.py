"""Backend definitions: validation at load time and the data they expose."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from maasbase.backends.definition import (
    ALLOWED_PLACEHOLDERS,
    BackendDefinition,
    BackendDefinitionError,
    CanonicalMetric,
    UnknownPlaceholderError,
    Vendor,
    render_template,
    template_fields,
)
from maasbase.backends.registry import builtin_definitions
from maasbase.common.errors import InvalidRequest


def definition(**fields: Any) -> BackendDefinition:
    base: dict[str, Any] = {
        "name": "demo",
        "supported_vendors": ["cpu"],
        "executable": ["demo-server"],
        "command": ["--port", "{port}"],
    }
    return BackendDefinition.model_validate(base | fields)


def test_unknown_placeholder_is_named_with_the_allowed_ones() -> None:
    with pytest.raises(UnknownPlaceholderError) as caught:
        definition(command=["--port", "{prot}"])
    error = caught.value
    assert isinstance(error, InvalidRequest)
    assert error.placeholder == "prot"
    assert "unknown placeholder {prot} in command ('{prot}')" in error.message
    assert "{model_path}" in error.message
    assert "{port}" in error.message
    assert error.details["allowed"] == sorted(ALLOWED_PLACEHOLDERS)


@pytest.mark.parametrize(
    ("fields", "where"),
    [
        ({"env": {"X": "{gpus}"}}, "env X"),
        ({"conditional_args": [{"when": "gpu", "args": ["{gpus}"]}]}, "conditional_args[gpu]"),
        ({"conditional_args": [{"vendors": ["amd"], "env": {"A": "{gpus}"}}]}, "[amd] env A"),
        ({"versions": {"1": {"command": ["{gpus}"]}}}, "versions[1].command"),
        ({"fallback_executable": ["{gpus}"]}, "fallback_executable"),
    ],
)
def test_every_template_is_checked(fields: dict[str, Any], where: str) -> None:
    with pytest.raises(UnknownPlaceholderError) as caught:
        definition(**fields)
    assert f"{where} ('{{gpus}}')" in caught.value.message


@pytest.mark.parametrize("token", ["{port", "{port:>6}", "{port!r}", "{}", "{0}", "{a.b}"])
def test_malformed_templates_are_refused(token: str) -> None:
    with pytest.raises(BackendDefinitionError, match="bad template"):
        definition(command=[token])


def test_doubled_braces_are_literal() -> None:
    demo = definition(command=['--json={{"port": {port}}}'])
    assert template_fields(demo.command[0]) == ["port"]
    assert render_template(demo.command[0], {"port": "80"}) == '--json={"port": 80}'


def test_version_field_is_filled_from_its_key() -> None:
    demo = definition(versions={"1.2": {"image": "demo:1.2"}, "2": None}, default_version="2")
    assert demo.versions["1.2"].version == "1.2"
    assert demo.resolve_version().version == "2"
    assert demo.resolve_version("1.2").image == "demo:1.2"


def test_default_version_must_exist() -> None:
    with pytest.raises(BackendDefinitionError, match="default_version '3' is not one of"):
        definition(versions={"1": {}}, default_version="3")


def test_conflicting_version_field_is_refused() -> None:
    with pytest.raises(BackendDefinitionError, match="differ"):
        definition(versions={"1": {"version": "2"}})


def test_vendor_images_override_the_default_image() -> None:
    demo = definition(versions={"1": {"image": "x:1", "vendor_images": {"amd": "x:1-rocm"}}})
    version = demo.resolve_version("1")
    assert version.image_for(Vendor.AMD) == "x:1-rocm"
    assert version.image_for(Vendor.NVIDIA) == "x:1"


@pytest.mark.parametrize(
    "fields",
    [
        {"name": "Has Space"},
        {"supported_vendors": []},
        {"supported_vendors": ["tpu"]},
        {"health_path": "health"},
        {"conditional_args": [{"args": ["--x"]}]},
        {"conditional_args": [{"when": "sometimes"}]},
        {"comand": ["typo"]},
        {"metrics": {"names": {"x": "not_a_metric"}}},
    ],
)
def test_structural_mistakes_are_validation_errors(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        definition(**fields)


def test_canonical_flag_resolves_aliases_and_underscores() -> None:
    demo = definition(flag_aliases={"-c": "--ctx-size", "--ctx_len": "--ctx-size"})
    assert demo.canonical_flag("-c") == "--ctx-size"
    assert demo.canonical_flag("--ctx_len") == "--ctx-size"
    assert demo.canonical_flag("--max_model_len") == "--max-model-len"


def test_builtins_cover_the_vendors_and_metrics_the_platform_relies_on() -> None:
    by_name = {d.name: d for d in builtin_definitions()}
    assert by_name["vllm"].distributed
    assert by_name["sglang"].distributed
    assert not by_name["llama.cpp"].distributed
    assert by_name["mindie"].supported_vendors == [Vendor.ASCEND]
    assert by_name["tensorrt-llm"].supported_vendors == [Vendor.NVIDIA]
    assert Vendor.CPU in by_name["llama.cpp"].supported_vendors
    assert by_name["vllm"].metrics.names["vllm:num_requests_running"] is (
        CanonicalMetric.REQUESTS_RUNNING
    )
    assert by_name["llama.cpp"].metrics.names["llamacpp:requests_processing"] is (
        CanonicalMetric.REQUESTS_RUNNING
    )
    assert by_name["vllm"].resolve_version().image_for(Vendor.NVIDIA) == (
        "vllm/vllm-openai:v0.11.0"
    )
    assert by_name["sglang"].resolve_version().image_for(Vendor.AMD) is None
    for backend in by_name.values():
        if backend.name != "custom":
            version = backend.resolve_version()
            assert version.image or version.vendor_images, f"{backend.name} has no image"
