"""Safetensors headers and Hugging Face ``config.json`` → :class:`ModelMetadata`.

A safetensors file starts with an 8-byte little-endian header length ``N`` and ``N``
bytes of JSON mapping tensor names to ``dtype``, ``shape`` and ``data_offsets``; the
weights follow. Reading the header gives exact weight bytes without reading weights.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .metadata import (
    ENCODER_ONLY_ARCHITECTURES,
    HeaderIncomplete,
    ModelFileNotFound,
    ModelFormatError,
    ModelMetadata,
    normalise_architecture,
)

# The safetensors format refuses headers above 100 MB.
MAX_HEADER_BYTES = 100_000_000
INDEX_FILENAME = "model.safetensors.index.json"
CONFIG_FILENAME = "config.json"
# Files that mark a sentence-transformers (embedding) model.
EMBEDDING_MARKER_FILES = frozenset({"modules.json", "sentence_bert_config.json"})

DTYPE_BITS: dict[str, int] = {
    "BOOL": 8,
    "U8": 8,
    "I8": 8,
    "F8_E4M3": 8,
    "F8_E5M2": 8,
    "F8_E8M0": 8,
    "F4": 4,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
    "I16": 16,
    "U16": 16,
    "F16": 16,
    "BF16": 16,
    "I32": 32,
    "U32": 32,
    "F32": 32,
    "I64": 64,
    "U64": 64,
    "F64": 64,
    "C64": 64,
}

_TORCH_DTYPE_LABELS = {"float16": "F16", "bfloat16": "BF16", "float32": "F32", "float": "F32"}


@dataclass(frozen=True, slots=True)
class SafetensorsTensor:
    name: str
    dtype: str
    shape: tuple[int, ...]
    n_bytes: int


@dataclass(frozen=True, slots=True)
class SafetensorsHeader:
    tensors: tuple[SafetensorsTensor, ...]
    metadata: Mapping[str, str] = field(default_factory=dict)
    header_size: int = 0  # 8 + N: where the tensor data starts

    @property
    def weight_bytes(self) -> int:
        return sum(t.n_bytes for t in self.tensors)


def header_length(prefix: bytes) -> int:
    """The JSON header length ``N`` from a file's first 8 bytes."""
    if len(prefix) < 8:
        raise HeaderIncomplete("safetensors header needs 8 bytes", needed_bytes=8)
    (length,) = struct.unpack("<Q", prefix[:8])
    if length > MAX_HEADER_BYTES:
        raise ModelFormatError(f"safetensors header of {length} bytes exceeds the format limit")
    return int(length)


def parse_safetensors_header(data: bytes) -> SafetensorsHeader:
    """Parse the header from a file's first bytes (at least ``8 + N`` of them)."""
    length = header_length(data)
    if len(data) < 8 + length:
        raise HeaderIncomplete(
            f"safetensors header ends at byte {8 + length}", needed_bytes=8 + length
        )
    try:
        raw = json.loads(data[8 : 8 + length])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFormatError(f"safetensors header is not JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise ModelFormatError("safetensors header is not a JSON object")
    metadata = raw.pop("__metadata__", None) or {}
    tensors = tuple(_tensor(name, info) for name, info in raw.items())
    return SafetensorsHeader(tensors, dict(metadata), 8 + length)


def _tensor(name: str, info: Any) -> SafetensorsTensor:
    try:
        dtype = str(info["dtype"])
        shape = tuple(int(d) for d in info["shape"])
        begin, end = (int(o) for o in info["data_offsets"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFormatError(f"safetensors entry {name!r} is malformed: {exc}") from exc
    n_bytes = end - begin
    bits = DTYPE_BITS.get(dtype)
    n_elements = 1
    for dim in shape:
        n_elements *= dim
    if n_bytes < 0 or (bits is not None and n_bytes != -(-n_elements * bits // 8)):
        raise ModelFormatError(
            f"safetensors tensor {name!r}: offsets span {n_bytes} bytes, "
            f"but {dtype} {list(shape)} needs {-(-n_elements * (bits or 0) // 8)}"
        )
    return SafetensorsTensor(name, dtype, shape, n_bytes)


def read_safetensors_header(path: str | Path) -> SafetensorsHeader:
    """Read only the header of a local safetensors file."""
    try:
        with open(path, "rb") as fh:
            prefix = fh.read(8)
            length = header_length(prefix)
            return parse_safetensors_header(prefix + fh.read(length))
    except FileNotFoundError:
        raise ModelFileNotFound(f"safetensors file not found: {path}") from None
    except HeaderIncomplete as exc:
        raise ModelFormatError(f"{path} is shorter than its safetensors header") from exc


def shard_names_from_index(index: Mapping[str, Any]) -> list[str]:
    """Shard file names listed in ``model.safetensors.index.json``, in a stable order."""
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise ModelFormatError(f"{INDEX_FILENAME} has no weight_map")
    return sorted({str(v) for v in weight_map.values()})


def local_shard_paths(folder: Path) -> list[Path]:
    index = folder / INDEX_FILENAME
    if index.is_file():
        return [folder / name for name in shard_names_from_index(_load_json(index))]
    return sorted(folder.glob("*.safetensors"))


def read_hf_folder_metadata(folder: str | Path) -> ModelMetadata:
    """Metadata of a local Hugging Face-style folder: ``config.json`` + safetensors."""
    folder = Path(folder)
    config_path = folder / CONFIG_FILENAME
    if not config_path.is_file():
        raise ModelFileNotFound(f"no {CONFIG_FILENAME} in {folder}")
    shards = local_shard_paths(folder)
    if not shards:
        raise ModelFileNotFound(f"no *.safetensors weights in {folder}")
    headers = [read_safetensors_header(p) for p in shards]
    names = [p.name for p in folder.iterdir()]
    return hf_metadata(_load_json(config_path), headers, file_names=names)


def _load_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFormatError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelFormatError(f"{path} is not a JSON object")
    return data


# ---------------------------------------------------------------------------- config.json


def hf_metadata(
    config: Mapping[str, Any],
    headers: Sequence[SafetensorsHeader],
    *,
    file_names: Iterable[str] = (),
) -> ModelMetadata:
    """Combine ``config.json`` (shape) with safetensors headers (exact weight bytes)."""
    text = config.get("text_config")
    cfg: dict[str, Any] = {**config, **text} if isinstance(text, dict) else dict(config)
    layers = _int(cfg, "num_hidden_layers", "n_layer", "num_layers")
    hidden = _int(cfg, "hidden_size", "n_embd", "d_model")
    heads = _int(cfg, "num_attention_heads", "n_head")
    kv_heads = _optional_int(cfg, "num_key_value_heads", "num_kv_heads", "multi_query_group_num")
    if kv_heads is None:
        kv_heads = 1 if cfg.get("multi_query") else heads
    head_dim = _optional_int(cfg, "head_dim") or (hidden // heads if heads else 0)
    value_dim: int | None = None
    if _optional_int(cfg, "kv_lora_rank"):
        # Multi-head latent attention caches one compressed vector per token and layer:
        # kv_lora_rank plus the rotary part of the key.
        kv_heads = 1
        head_dim = _int(cfg, "kv_lora_rank") + (_optional_int(cfg, "qk_rope_head_dim") or 0)
        value_dim = 0
    model_type = str(cfg.get("model_type") or "")
    architectures = config.get("architectures") or []
    arch_class = str(architectures[0]) if architectures else ""
    return ModelMetadata(
        architecture=model_type or arch_class or "unknown",
        num_layers=layers,
        num_attention_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        hidden_size=hidden,
        max_context=_max_context(cfg),
        weight_bytes=sum(h.weight_bytes for h in headers),
        dtype=_dtype_label(config, cfg, headers),
        vocab_size=_optional_int(cfg, "vocab_size", "padded_vocab_size") or 0,
        is_embedding=_looks_like_embedding(model_type, arch_class, file_names),
        sliding_window=_optional_int(cfg, "sliding_window"),
        intermediate_size=_optional_int(cfg, "intermediate_size", "ffn_hidden_size", "n_inner"),
        value_head_dim=value_dim,
        source_format="safetensors",
    )


def _optional_int(cfg: Mapping[str, Any], *names: str) -> int | None:
    for name in names:
        value = cfg.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def _int(cfg: Mapping[str, Any], *names: str) -> int:
    value = _optional_int(cfg, *names)
    if value is None:
        raise ModelFormatError(f"config.json lacks {names[0]!r}; cannot size this model")
    return value


def _max_context(cfg: Mapping[str, Any]) -> int:
    """Trained context, scaled the way vLLM derives its default ``max_model_len``."""
    base = _optional_int(
        cfg, "max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"
    )
    if base is None:
        raise ModelFormatError("config.json lacks max_position_embeddings")
    rope = cfg.get("rope_scaling")
    if not isinstance(rope, dict):
        return base
    rope_type = str(rope.get("rope_type") or rope.get("type") or "")
    factor = rope.get("factor")
    # llama3/longrope/su already state the extended length in max_position_embeddings.
    if rope_type in {"", "default", "llama3", "longrope", "su", "mrope"}:
        return base
    if not isinstance(factor, int | float) or factor <= 1:
        return base
    original = rope.get("original_max_position_embeddings")
    start = original if rope_type == "yarn" and isinstance(original, int) else base
    return int(start * factor)


def _quantisation_label(quant: Mapping[str, Any]) -> str:
    method = str(quant.get("quant_method") or "quantized").lower()
    if quant.get("load_in_4bit"):
        return f"{method}-4bit"
    if quant.get("load_in_8bit"):
        return f"{method}-8bit"
    bits = quant.get("bits") or quant.get("w_bit")
    return f"{method}-{bits}bit" if isinstance(bits, int) else method


def _dtype_label(
    config: Mapping[str, Any], cfg: Mapping[str, Any], headers: Sequence[SafetensorsHeader]
) -> str:
    quant = config.get("quantization_config") or cfg.get("quantization_config")
    if isinstance(quant, dict):
        return _quantisation_label(quant)
    by_dtype: dict[str, int] = {}
    for header in headers:
        for tensor in header.tensors:
            by_dtype[tensor.dtype] = by_dtype.get(tensor.dtype, 0) + tensor.n_bytes
    if by_dtype:
        return max(by_dtype, key=lambda d: by_dtype[d])
    torch_dtype = str(cfg.get("torch_dtype") or cfg.get("dtype") or "")
    return _TORCH_DTYPE_LABELS.get(torch_dtype, torch_dtype or "unknown")


def _looks_like_embedding(model_type: str, arch_class: str, file_names: Iterable[str]) -> bool:
    if normalise_architecture(model_type) in ENCODER_ONLY_ARCHITECTURES:
        return True
    if arch_class.endswith("Model") and not arch_class.endswith("LMHeadModel"):
        return True
    return any(Path(name).name in EMBEDDING_MARKER_FILES for name in file_names)
