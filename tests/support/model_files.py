"""Model files for the estimation tests, generated offline.

- tiny GGUF files written with ``gguf.GGUFWriter`` (real tensor data, a few KB);
- full-size-shaped GGUF and safetensors files whose header declares every tensor of a
  real model, truncated to their declared size: sparse files that take a few KB on disk.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from maasbase.server.estimate import ModelMetadata

Q = gguf.GGMLQuantizationType

# (layers, hidden, heads, kv_heads, intermediate, vocab, max_position_embeddings)
LLAMA3_8B = (32, 4096, 32, 8, 14336, 128256, 8192)
LLAMA3_70B = (80, 8192, 64, 8, 28672, 128256, 8192)


def write_tiny_gguf(
    path: Path,
    *,
    arch: str = "llama",
    layers: int = 2,
    hidden: int = 64,
    heads: int = 4,
    kv_heads: int = 2,
    ffn: int = 128,
    vocab: int = 256,
    context: int = 512,
    file_type: int | None = int(gguf.LlamaFileType.MOSTLY_Q8_0),
    extra: dict[str, Any] | None = None,
    split_max_tensors: int = 0,
) -> Path:
    """A llama-shaped GGUF: F16 embeddings, Q8_0 attention, Q4_0 MLP, F32 norms, Q8_0 head."""
    rng = np.random.default_rng(0)
    writer = gguf.GGUFWriter(path, arch, split_max_tensors=split_max_tensors)
    writer.add_block_count(layers)
    writer.add_context_length(context)
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    if file_type is not None:
        writer.add_file_type(file_type)
    writer.add_token_list([f"tok{i}" for i in range(vocab)])
    for key, value in (extra or {}).items():
        if isinstance(value, bool):
            writer.add_bool(key, value)
        elif isinstance(value, int):
            writer.add_uint32(key, value)
        elif isinstance(value, str):
            writer.add_string(key, value)
        else:
            writer.add_array(key, value)

    def add(name: str, rows: int, cols: int, qtype: gguf.GGMLQuantizationType) -> None:
        data = rng.standard_normal((rows, cols)).astype(np.float32)
        if qtype == Q.F32:
            writer.add_tensor(name, data[0])
        elif qtype == Q.F16:
            writer.add_tensor(name, data.astype(np.float16))
        else:
            writer.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)

    kv_dim = kv_heads * (hidden // heads)
    add("token_embd.weight", vocab, hidden, Q.F16)
    for i in range(layers):
        add(f"blk.{i}.attn_norm.weight", 1, hidden, Q.F32)
        add(f"blk.{i}.attn_q.weight", hidden, hidden, Q.Q8_0)
        add(f"blk.{i}.attn_k.weight", kv_dim, hidden, Q.Q8_0)
        add(f"blk.{i}.attn_v.weight", kv_dim, hidden, Q.Q8_0)
        add(f"blk.{i}.attn_output.weight", hidden, hidden, Q.Q8_0)
        add(f"blk.{i}.ffn_norm.weight", 1, hidden, Q.F32)
        add(f"blk.{i}.ffn_gate.weight", ffn, hidden, Q.Q4_0)
        add(f"blk.{i}.ffn_up.weight", ffn, hidden, Q.Q4_0)
        add(f"blk.{i}.ffn_down.weight", hidden, ffn, Q.Q4_0)
    add("output_norm.weight", 1, hidden, Q.F32)
    add("output.weight", vocab, hidden, Q.Q8_0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _llama_tensors(shape: tuple[int, ...]) -> Iterator[tuple[str, tuple[int, int], str]]:
    """(HF name, (rows, cols), role) of every tensor of a Llama model."""
    layers, hidden, heads, kv_heads, inter, vocab, _ = shape
    kv_dim = kv_heads * (hidden // heads)
    yield "model.embed_tokens.weight", (vocab, hidden), "embed"
    for i in range(layers):
        p = f"model.layers.{i}."
        yield p + "input_layernorm.weight", (1, hidden), "norm"
        yield p + "self_attn.q_proj.weight", (hidden, hidden), "linear"
        yield p + "self_attn.k_proj.weight", (kv_dim, hidden), "linear"
        yield p + "self_attn.v_proj.weight", (kv_dim, hidden), "linear"
        yield p + "self_attn.o_proj.weight", (hidden, hidden), "linear"
        yield p + "post_attention_layernorm.weight", (1, hidden), "norm"
        yield p + "mlp.gate_proj.weight", (inter, hidden), "linear"
        yield p + "mlp.up_proj.weight", (inter, hidden), "linear"
        yield p + "mlp.down_proj.weight", (hidden, inter), "linear"
    yield "model.norm.weight", (1, hidden), "norm"
    yield "lm_head.weight", (vocab, hidden), "head"


def safetensors_header_bytes(
    tensors: list[tuple[str, str, list[int], int]], metadata: dict[str, str] | None = None
) -> bytes:
    """Header bytes (length + JSON) for (name, dtype, shape, n_bytes) laid out in order."""
    header: dict[str, Any] = {"__metadata__": metadata or {"format": "pt"}}
    offset = 0
    for name, dtype, shape, n_bytes in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + n_bytes]}
        offset += n_bytes
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw


def write_sparse_safetensors(path: Path, tensors: list[tuple[str, str, list[int], int]]) -> int:
    """Write the header, then extend the file to its declared size without writing data."""
    header = safetensors_header_bytes(tensors)
    data_bytes = sum(t[3] for t in tensors)
    path.write_bytes(header)
    os.truncate(path, len(header) + data_bytes)
    return data_bytes


def write_llama_folder(
    folder: Path,
    shape: tuple[int, ...] = LLAMA3_8B,
    *,
    shards: int = 4,
    dtype: str = "BF16",
    config_extra: dict[str, Any] | None = None,
) -> Path:
    """A Hugging Face-style Llama folder: config.json, index and sparse BF16 shards."""
    layers, hidden, heads, kv_heads, inter, vocab, ctx = shape
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden,
        "intermediate_size": inter,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "max_position_embeddings": ctx,
        "vocab_size": vocab,
        "torch_dtype": "bfloat16",
        **(config_extra or {}),
    }
    (folder / "config.json").write_text(json.dumps(config))
    entries = [
        (name, dtype, [cols] if rows == 1 else [rows, cols], rows * cols * 2)
        for name, (rows, cols), _ in _llama_tensors(shape)
    ]
    per_shard = -(-len(entries) // shards)
    weight_map: dict[str, str] = {}
    for s in range(shards):
        name = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        chunk = entries[s * per_shard : (s + 1) * per_shard]
        write_sparse_safetensors(folder / name, chunk)
        weight_map.update({t[0]: name for t in chunk})
    index = {"metadata": {"total_size": sum(t[3] for t in entries)}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    return folder


def write_sparse_llama_gguf(path: Path, shape: tuple[int, ...] = LLAMA3_70B) -> Path:
    """A Q4_K-shaped GGUF of a full Llama (Q6_K output head), truncated to its real size."""
    layers, hidden, heads, kv_heads, inter, vocab, ctx = shape
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_block_count(layers)
    writer.add_context_length(ctx)
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(inter)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_vocab_size(vocab)
    writer.add_file_type(int(gguf.LlamaFileType.MOSTLY_Q4_K_M))
    gguf_names = {
        "model.embed_tokens.weight": "token_embd.weight",
        "model.norm.weight": "output_norm.weight",
        "lm_head.weight": "output.weight",
    }
    for name, (rows, cols), role in _llama_tensors(shape):
        qtype = {"norm": Q.F32, "head": Q.Q6_K}.get(role, Q.Q4_K)
        block, size = gguf.GGML_QUANT_SIZES[qtype]
        dims = [cols] if rows == 1 else [rows, cols]
        writer.add_tensor_info(
            gguf_names.get(name, name),
            dims,
            np.dtype(np.float32),
            rows * cols * size // block,
            qtype,
        )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()
    header_size = path.stat().st_size
    data_start = -(-header_size // gguf.GGUF_DEFAULT_ALIGNMENT) * gguf.GGUF_DEFAULT_ALIGNMENT
    data = sum(
        -(-ti.nbytes // gguf.GGUF_DEFAULT_ALIGNMENT) * gguf.GGUF_DEFAULT_ALIGNMENT
        for ti in writer.tensors[0].values()
    )
    os.truncate(path, data_start + data)
    return path


# Metadata as the readers report it for the two Llama-3 shapes above.
LLAMA3_8B_METADATA = ModelMetadata(
    architecture="llama",
    num_layers=32,
    num_attention_heads=32,
    num_kv_heads=8,
    head_dim=128,
    hidden_size=4096,
    max_context=8192,
    weight_bytes=16_060_522_496,
    dtype="BF16",
    vocab_size=128256,
    intermediate_size=14336,
)
LLAMA3_70B_METADATA = replace(
    LLAMA3_8B_METADATA,
    num_layers=80,
    num_attention_heads=64,
    hidden_size=8192,
    weight_bytes=141_107_412_992,
    intermediate_size=28672,
)
