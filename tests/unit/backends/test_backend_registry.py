"""The registry: built-ins, user definitions from folders and dicts, lookups."""

from __future__ import annotations

from pathlib import Path

import pytest

from maasbase.backends.definition import (
    BackendDefinitionError,
    UnknownPlaceholderError,
    UnknownVersionError,
)
from maasbase.backends.registry import (
    BackendRegistry,
    DuplicateBackendError,
    UnknownBackendError,
    definition_from_yaml,
)
from maasbase.common.errors import NotFound

MY_SERVER = """
name: my-server
description: an in-house server
supported_vendors: [nvidia]
default_version: "1"
versions:
  "1": {image: "registry.local/my-server:1"}
executable: [my-server]
command: [--model, "{model_path}", --port, "{port}"]
"""


def test_builtins_load_with_their_versions() -> None:
    registry = BackendRegistry.default()
    assert set(registry.names()) == {
        "vllm",
        "sglang",
        "llama.cpp",
        "vox-box",
        "mindie",
        "tensorrt-llm",
        "custom",
    }
    assert len(registry) == 7
    definition, version = registry.get_version("vllm")
    assert definition.name == "vllm"
    assert version.version == "0.11.0"
    assert registry.is_builtin("vllm")


def test_unknown_backend_lists_known_ones_and_suggests() -> None:
    registry = BackendRegistry.default()
    with pytest.raises(UnknownBackendError) as caught:
        registry.get("vlm")
    assert isinstance(caught.value, NotFound)
    assert caught.value.message == (
        "unknown backend 'vlm'; known: custom, llama.cpp, mindie, sglang, tensorrt-llm, "
        "vllm, vox-box. Did you mean 'vllm'?"
    )


def test_lookup_ignores_case_and_surrounding_space() -> None:
    registry = BackendRegistry.default()
    assert registry.get(" VLLM ").name == "vllm"
    assert "SGLang" in registry
    assert 3 not in registry


def test_unknown_version_is_a_clear_error() -> None:
    with pytest.raises(UnknownVersionError, match=r"known: 0\.11\.0, 0\.10\.2"):
        BackendRegistry.default().get_version("vllm", "9.9")


def test_user_definitions_from_a_folder_and_from_dicts(tmp_path: Path) -> None:
    (tmp_path / "my-server.yaml").write_text(MY_SERVER)
    (tmp_path / "notes.txt").write_text("ignored")
    registry = BackendRegistry.default(
        user_dir=tmp_path,
        user=[
            {
                "name": "other",
                "supported_vendors": ["cpu"],
                "executable": ["other"],
                "command": ["{port}"],
            }
        ],
    )
    assert registry.get("my-server").resolve_version().image == "registry.local/my-server:1"
    assert registry.get("other").executable == ["other"]
    assert not registry.is_builtin("my-server")
    assert [d.name for d in registry][:2] == ["custom", "llama.cpp"]


def test_a_user_definition_replaces_the_builtin_of_the_same_name() -> None:
    registry = BackendRegistry.default(
        user=[{"name": "vllm", "supported_vendors": ["nvidia"], "executable": ["my-vllm"]}]
    )
    assert registry.get("vllm").executable == ["my-vllm"]
    assert not registry.is_builtin("vllm")


def test_two_user_definitions_with_one_name_conflict() -> None:
    item = {"name": "x", "supported_vendors": ["cpu"], "executable": ["x"]}
    with pytest.raises(DuplicateBackendError, match="defined twice"):
        BackendRegistry.default(user=[item, item])


def test_bad_yaml_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "broken.yaml").write_text("name: [unclosed\n")
    with pytest.raises(BackendDefinitionError, match=r"broken\.yaml is not valid YAML"):
        BackendRegistry.default(user_dir=tmp_path)


def test_invalid_fields_name_the_source_and_field(tmp_path: Path) -> None:
    (tmp_path / "typo.yml").write_text(MY_SERVER + "helth_path: /health\n")
    with pytest.raises(BackendDefinitionError) as caught:
        BackendRegistry.default(user_dir=tmp_path)
    assert "typo.yml" in caught.value.message
    assert "helth_path" in caught.value.message


def test_unknown_placeholder_in_a_user_file_is_reported() -> None:
    with pytest.raises(UnknownPlaceholderError, match=r"\{modle_path\}"):
        definition_from_yaml(MY_SERVER.replace("{model_path}", "{modle_path}"), source="x")


def test_a_document_that_is_not_a_mapping_is_refused() -> None:
    with pytest.raises(BackendDefinitionError, match="must hold one mapping"):
        definition_from_yaml("- a\n- b\n", source="list.yaml")


def test_missing_user_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BackendDefinitionError, match="does not exist"):
        BackendRegistry.default(user_dir=tmp_path / "absent")
