"""Safetensors headers and config.json against sparse, full-size-shaped fixture folders."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from maasbase.server.estimate import (
    HeaderIncomplete,
    ModelFileNotFound,
    ModelFormatError,
    hf_metadata,
    parse_safetensors_header,
    read_hf_folder_metadata,
    read_safetensors_header,
)
from tests.support.model_files import (
    LLAMA3_8B,
    LLAMA3_70B,
    safetensors_header_bytes,
    write_llama_folder,
    write_sparse_safetensors,
)

# Llama-3-8B parameters: per layer q,o 4096² + k,v 1024 × 4096 + 3 × 14336 × 4096 + 2 norms.
LLAMA3_8B_PARAMS = 32 * (2 * 4096**2 + 2 * 1024 * 4096 + 3 * 14336 * 4096 + 2 * 4096) + (
    2 * 128256 * 4096 + 4096
)
# Llama-3-70B: 80 layers of hidden 8192, intermediate 28672, 8 KV heads of 128.
LLAMA3_70B_PARAMS = 80 * (2 * 8192**2 + 2 * 1024 * 8192 + 3 * 28672 * 8192 + 2 * 8192) + (
    2 * 128256 * 8192 + 8192
)


def _config(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": 4096,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "max_position_embeddings": 8192,
        "vocab_size": 128256,
        "torch_dtype": "bfloat16",
    }
    return {**base, **overrides}


def test_llama3_8b_folder_weights_are_exact(tmp_path: Path) -> None:
    meta = read_hf_folder_metadata(write_llama_folder(tmp_path / "8b", LLAMA3_8B))

    assert LLAMA3_8B_PARAMS == 8_030_261_248
    assert meta.weight_bytes == 2 * LLAMA3_8B_PARAMS == 16_060_522_496
    assert (meta.num_layers, meta.num_attention_heads, meta.num_kv_heads) == (32, 32, 8)
    assert (meta.head_dim, meta.hidden_size, meta.intermediate_size) == (128, 4096, 14336)
    assert (meta.max_context, meta.vocab_size, meta.dtype) == (8192, 128256, "BF16")
    assert meta.architecture == "llama"
    assert not meta.is_embedding


def test_sparse_llama3_70b_folder_takes_kilobytes_of_disk(tmp_path: Path) -> None:
    folder = write_llama_folder(tmp_path / "70b", LLAMA3_70B, shards=30)

    meta = read_hf_folder_metadata(folder)

    assert LLAMA3_70B_PARAMS == 70_553_706_496
    assert meta.weight_bytes == 2 * LLAMA3_70B_PARAMS == 141_107_412_992
    shards = list(folder.glob("*.safetensors"))
    assert len(shards) == 30
    assert sum(p.stat().st_size for p in shards) > meta.weight_bytes
    assert sum(p.stat().st_blocks * 512 for p in shards) < 8 * 1024 * 1024


def test_folder_without_index_reads_every_safetensors_file(tmp_path: Path) -> None:
    folder = write_llama_folder(tmp_path / "8b", LLAMA3_8B, shards=2)
    (folder / "model.safetensors.index.json").unlink()

    assert read_hf_folder_metadata(folder).weight_bytes == 2 * LLAMA3_8B_PARAMS


def test_prefix_parse_equals_file_read(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    write_sparse_safetensors(
        path,
        [("a", "F8_E4M3", [1024, 4096], 1024 * 4096), ("s", "F32", [1024], 4096)],
    )
    from_file = read_safetensors_header(path)

    with path.open("rb") as fh:
        prefix = fh.read(from_file.header_size)

    assert parse_safetensors_header(prefix) == from_file
    assert from_file.weight_bytes == 1024 * 4096 + 4096
    with pytest.raises(HeaderIncomplete) as excinfo:
        parse_safetensors_header(prefix[:20])
    assert excinfo.value.needed_bytes == from_file.header_size


def test_offsets_that_disagree_with_dtype_and_shape_are_rejected() -> None:
    data = safetensors_header_bytes([("w", "BF16", [10, 10], 100)])  # needs 200 bytes

    with pytest.raises(ModelFormatError, match="needs 200"):
        parse_safetensors_header(data)


def test_non_json_header_is_a_format_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.safetensors"
    path.write_bytes((5).to_bytes(8, "little") + b"{oops")

    with pytest.raises(ModelFormatError, match="not JSON"):
        read_safetensors_header(path)


def test_folder_without_config_is_not_found(tmp_path: Path) -> None:
    folder = write_llama_folder(tmp_path / "8b", LLAMA3_8B, shards=1)
    (folder / "config.json").unlink()

    with pytest.raises(ModelFileNotFound, match=r"config\.json"):
        read_hf_folder_metadata(folder)


def test_kv_heads_default_to_attention_heads_and_head_dim_to_hidden_over_heads() -> None:
    meta = hf_metadata(_config(), [])

    assert (meta.num_kv_heads, meta.head_dim) == (32, 128)


def test_explicit_head_dim_wins_over_hidden_over_heads() -> None:
    # Gemma-7B: hidden 3072, 16 heads, head_dim 256 (not 192).
    meta = hf_metadata(_config(hidden_size=3072, num_attention_heads=16, head_dim=256), [])

    assert meta.head_dim == 256


def test_multimodal_text_config_supplies_the_language_model_shape() -> None:
    config = {
        "architectures": ["Gemma3ForConditionalGeneration"],
        "model_type": "gemma3",
        "text_config": {
            "model_type": "gemma3_text",
            "hidden_size": 2560,
            "num_hidden_layers": 34,
            "num_attention_heads": 8,
            "num_key_value_heads": 4,
            "head_dim": 256,
            "max_position_embeddings": 131072,
            "sliding_window": 1024,
            "vocab_size": 262208,
        },
        "torch_dtype": "bfloat16",
    }

    meta = hf_metadata(config, [])

    assert (meta.num_layers, meta.num_kv_heads, meta.head_dim) == (34, 4, 256)
    assert (meta.max_context, meta.sliding_window) == (131072, 1024)
    assert meta.dtype == "BF16"  # no headers: torch_dtype
    assert not meta.is_embedding


@pytest.mark.parametrize(
    ("quant", "label"),
    [
        ({"quant_method": "awq", "bits": 4, "group_size": 128}, "awq-4bit"),
        ({"quant_method": "gptq", "bits": 8}, "gptq-8bit"),
        ({"quant_method": "fp8", "activation_scheme": "dynamic"}, "fp8"),
        ({"quant_method": "bitsandbytes", "load_in_4bit": True}, "bitsandbytes-4bit"),
    ],
)
def test_quantisation_config_labels_the_weights(quant: dict[str, Any], label: str) -> None:
    assert hf_metadata(_config(quantization_config=quant), []).dtype == label


def test_yarn_rope_scaling_extends_the_context_like_vllm() -> None:
    rope = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}
    meta = hf_metadata(_config(max_position_embeddings=32768, rope_scaling=rope), [])

    assert meta.max_context == 131072


def test_llama3_rope_scaling_keeps_the_stated_context() -> None:
    rope = {"rope_type": "llama3", "factor": 8.0, "original_max_position_embeddings": 8192}
    meta = hf_metadata(_config(max_position_embeddings=131072, rope_scaling=rope), [])

    assert meta.max_context == 131072


def test_latent_attention_caches_one_compressed_vector() -> None:
    # DeepSeek-V3: kv_lora_rank 512 + qk_rope_head_dim 64 = 576 values per token per layer.
    config = _config(
        num_hidden_layers=61,
        hidden_size=7168,
        num_attention_heads=128,
        num_key_value_heads=128,
        kv_lora_rank=512,
        qk_rope_head_dim=64,
    )

    meta = hf_metadata(config, [])

    assert (meta.num_kv_heads, meta.head_dim, meta.v_head_dim) == (1, 576, 0)


def test_bert_and_sentence_transformers_folders_are_embedding_models() -> None:
    bert = _config(model_type="bert", architectures=["BertModel"])
    st_files = ["config.json", "modules.json", "model.safetensors"]

    assert hf_metadata(bert, []).is_embedding
    assert not hf_metadata(bert, []).has_kv_cache
    assert hf_metadata(_config(), [], file_names=st_files).is_embedding


def test_config_without_layers_names_the_missing_key(tmp_path: Path) -> None:
    config = _config()
    del config["num_hidden_layers"]
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    write_sparse_safetensors(folder / "model.safetensors", [("w", "F16", [4], 8)])

    with pytest.raises(ModelFormatError, match="num_hidden_layers"):
        read_hf_folder_metadata(folder)
