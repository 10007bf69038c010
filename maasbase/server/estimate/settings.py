"""Engine settings that drive an estimate, read from the engine kind and its flags.

Backend parameters arrive as a list such as ``["--max-model-len", "4096"]``,
``["--max-model-len=4096"]`` or ``["-c 2048"]``; the last occurrence of a flag wins, as
with argparse. Flags the estimate does not use are ignored; bad values of the ones it
uses raise :class:`InvalidBackendParameter`.

Defaults, as the engines document them:

- context: vLLM and SGLang use the model's maximum; llama.cpp uses
  :data:`LLAMA_CPP_DEFAULT_CTX` (4096, its ``--ctx-size`` default; ``-c 0`` = the trained
  context), capped at the trained context. llama.cpp ``-np`` slots share that context.
- vLLM reserves ``--gpu-memory-utilization`` (0.9) × GPU memory whatever the model needs;
  SGLang's ``--mem-fraction-static`` is modelled the same way with 0.88 (SGLang picks
  0.79–0.88 by GPU size and TP; 0.88 is the large-GPU value).
- tokens per forward pass: vLLM ``--max-num-batched-tokens`` and SGLang
  ``--chunked-prefill-size`` 8192; llama.cpp ``--ubatch-size`` 512; 256 sequences.
- KV cache: 16 bit (vLLM/SGLang ``auto``, llama.cpp ``f16``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import gguf

from maasbase.common.errors import InvalidRequest

from .metadata import ModelMetadata

DEFAULT_BATCHED_TOKENS = 8192
DEFAULT_MAX_SEQS = 256
VLLM_DEFAULT_GPU_UTILIZATION = 0.9
SGLANG_DEFAULT_MEM_FRACTION = 0.88
LLAMA_CPP_DEFAULT_CTX = 4096
LLAMA_CPP_DEFAULT_UBATCH = 512

VLLM, SGLANG, LLAMA_CPP, OTHER = "vllm", "sglang", "llama.cpp", "other"
_ENGINE_ALIASES = {"vllm": VLLM, "sglang": SGLANG, "llamacpp": LLAMA_CPP}
_CONTEXT_FLAGS = {
    VLLM: ("--max-model-len",),
    SGLANG: ("--context-length",),
    LLAMA_CPP: ("-c", "--ctx-size"),
    OTHER: ("--max-model-len", "--context-length", "-c", "--ctx-size"),
}
_LLAMA_CPP_CACHE_TYPES = frozenset(
    {"f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1"}
)
_NUMBER_RE = re.compile(r"^-?\d+(\.\d+)?$")
_HUMAN_INT_RE = re.compile(r"^(\d+(?:\.\d+)?)([kmgKMG]?)$")


class InvalidBackendParameter(InvalidRequest):
    code = "invalid_backend_parameter"


@dataclass(frozen=True, slots=True)
class EstimateRequest:
    engine: str = VLLM
    backend_parameters: tuple[str, ...] = ()
    tensor_parallel_size: int | None = None  # GPUs to split over; flags may also set it


@dataclass(frozen=True, slots=True)
class CacheType:
    """Storage of one KV element type: ``size`` bytes per ``block`` elements."""

    name: str
    block: int
    size: int

    def row_bytes(self, elements: int) -> int:
        return -(-elements // self.block) * self.size


F16_CACHE = CacheType("f16", 1, 2)


@dataclass(frozen=True, slots=True)
class EngineSettings:
    engine: str
    context_length: int
    cache_k: CacheType
    cache_v: CacheType
    gpu_memory_utilization: float | None
    tensor_parallel_size: int
    parallel_sequences: int
    batched_tokens: int
    max_sequences: int
    cuda_graphs: bool
    flash_attention: bool
    gpu_layers: int | None
    kv_offload: bool
    dtype_bytes: int | None  # ``--dtype`` for float checkpoints; None = keep the file's
    online_quantization: str | None
    notes: tuple[str, ...]


def parse_flags(params: Sequence[str]) -> list[tuple[str, str | None]]:
    """``--a 1``, ``--a=1``, ``-c 2048``, ``"--a 1"`` (one item) and bare ``--flag``."""
    tokens: list[str] = []
    for item in params:
        parts = item.strip().split(None, 1)
        if len(parts) == 2 and parts[0].startswith("-") and "=" not in parts[0]:
            tokens.extend(parts)
        elif parts:
            tokens.append(item.strip())
    flags: list[tuple[str, str | None]] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token.startswith("-") and not _NUMBER_RE.match(token):
            name, eq, value = token.partition("=")
            if eq:
                flags.append((name, value))
            elif i + 1 < len(tokens) and (
                not tokens[i + 1].startswith("-") or _NUMBER_RE.match(tokens[i + 1])
            ):
                flags.append((name, tokens[i + 1]))
                i += 1
            else:
                flags.append((name, None))
        i += 1
    return flags


def _last(flags: list[tuple[str, str | None]], *names: str) -> tuple[str, str | None] | None:
    for flag in reversed(flags):
        if flag[0] in names:
            return flag
    return None


def _int_flag(flags: list[tuple[str, str | None]], *names: str, human: bool = False) -> int | None:
    found = _last(flags, *names)
    if found is None:
        return None
    name, value = found
    text = (value or "").strip()
    match = _HUMAN_INT_RE.match(text) if human else None
    if match and match[2]:
        base = 1000 if match[2].islower() else 1024
        power = "kmg".index(match[2].lower()) + 1
        return int(float(match[1]) * base**power)
    try:
        return int(text)
    except ValueError:
        raise InvalidBackendParameter(f"{name} needs an integer, got {value!r}") from None


def _fraction_flag(flags: list[tuple[str, str | None]], name: str, default: float) -> float:
    found = _last(flags, name)
    if found is None:
        return default
    try:
        value = float(found[1] or "")
    except ValueError:
        value = math.nan
    if not 0 < value <= 1:
        raise InvalidBackendParameter(f"{name} must be a fraction in (0, 1], got {found[1]!r}")
    return value


def _engine_cache_type(value: str | None) -> CacheType:
    """vLLM/SGLang ``--kv-cache-dtype``: ``auto`` is the 16-bit activation dtype."""
    name = (value or "auto").lower()
    if name in {"auto", "bfloat16", "bf16", "float16", "fp16", "half"}:
        return CacheType(name, 1, 2)
    if name.startswith("fp8"):
        return CacheType(name, 1, 1)
    if name.startswith("fp4"):
        return CacheType(name, 2, 1)
    raise InvalidBackendParameter(f"--kv-cache-dtype {value!r} is not a known KV cache dtype")


def _ggml_cache_type(flag: str, value: str | None) -> CacheType:
    """llama.cpp ``--cache-type-k/-v``: a GGML type name such as ``f16`` or ``q8_0``."""
    name = (value or "").lower()
    if name not in _LLAMA_CPP_CACHE_TYPES:
        raise InvalidBackendParameter(
            f"{flag} {value!r} is not a llama.cpp cache type; use one of "
            + ", ".join(sorted(_LLAMA_CPP_CACHE_TYPES))
        )
    qtype = gguf.GGMLQuantizationType[name.upper()]
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    return CacheType(qtype.name.lower(), block, size)


def _context(
    meta: ModelMetadata, engine: str, flags: list[tuple[str, str | None]], notes: list[str]
) -> int:
    found = _last(flags, *_CONTEXT_FLAGS[engine])
    if found is not None and (found[1] or "").lower() == "auto":
        return meta.max_context  # vLLM: the longest context that fits; at most the model's
    requested = _int_flag(flags, *_CONTEXT_FLAGS[engine], human=engine == VLLM)
    if requested is None and engine == LLAMA_CPP:
        if meta.max_context > LLAMA_CPP_DEFAULT_CTX:
            notes.append(f"llama.cpp default context {LLAMA_CPP_DEFAULT_CTX}; set -c to change")
        return min(meta.max_context, LLAMA_CPP_DEFAULT_CTX)
    if requested is None or requested == 0 or (requested == -1 and engine != LLAMA_CPP):
        return meta.max_context
    if requested < 0:
        raise InvalidBackendParameter(f"context length must be positive, got {requested}")
    if requested > meta.max_context:
        if engine in (VLLM, SGLANG):
            raise InvalidBackendParameter(
                f"context length {requested} exceeds the model's maximum {meta.max_context}; "
                f"lower it to at most {meta.max_context}"
            )
        notes.append(f"context {requested} exceeds the trained {meta.max_context}")
    return requested


def _tensor_parallel(
    meta: ModelMetadata, engine: str, flags: list[tuple[str, str | None]], request: int | None
) -> int:
    names = {
        VLLM: ("-tp", "--tensor-parallel-size"),
        SGLANG: ("--tp-size", "--tp", "--tensor-parallel-size"),
    }
    from_flags = _int_flag(flags, *names.get(engine, ("--tensor-parallel-size",)))
    if from_flags is not None and request is not None and from_flags != request:
        raise InvalidBackendParameter(
            f"tensor parallel size {from_flags} in the backend parameters conflicts with "
            f"the {request} GPUs requested; drop one of them"
        )
    tp = from_flags if from_flags is not None else (request if request is not None else 1)
    if tp < 1:
        raise InvalidBackendParameter(f"tensor parallel size must be ≥ 1, got {tp}")
    if engine in (VLLM, SGLANG) and tp not in valid_tensor_parallel_sizes(
        meta.num_attention_heads, tp, meta.num_kv_heads
    ):
        valid = valid_tensor_parallel_sizes(meta.num_attention_heads, 64, meta.num_kv_heads)
        raise InvalidBackendParameter(
            f"tensor parallel size {tp} does not divide the model's {meta.num_attention_heads} "
            f"attention heads / {meta.num_kv_heads} KV heads; use one of {valid}"
        )
    return tp


def resolve_settings(meta: ModelMetadata, request: EstimateRequest) -> EngineSettings:
    """Read what the estimate needs out of the engine kind and its flags."""
    key = re.sub(r"[-_.\s]", "", request.engine.lower())
    engine = _ENGINE_ALIASES.get(key, OTHER)
    flags = parse_flags(request.backend_parameters)
    notes: list[str] = []
    context = _context(meta, engine, flags, notes)
    tp = _tensor_parallel(meta, engine, flags, request.tensor_parallel_size)
    if engine == LLAMA_CPP:
        k = _last(flags, "-ctk", "--cache-type-k")
        v = _last(flags, "-ctv", "--cache-type-v")
        cache_k = _ggml_cache_type(*k) if k else F16_CACHE
        cache_v = _ggml_cache_type(*v) if v else F16_CACHE
        fa = _last(flags, "-fa", "--flash-attn")
        flash = fa is None or (fa[1] or "on").lower() not in {"off", "0", "false", "disabled"}
        parallel = max(_int_flag(flags, "-np", "--parallel") or 1, 1)  # -1 = auto
        util = None
        tokens = _int_flag(flags, "-ub", "--ubatch-size") or LLAMA_CPP_DEFAULT_UBATCH
        ngl_flags = ("-ngl", "--gpu-layers", "--n-gpu-layers")
        ngl = _last(flags, *ngl_flags)
        all_layers = ngl is None or (ngl[1] or "").lower() in {"auto", "all"}
        gpu_layers = None if all_layers else _int_flag(flags, *ngl_flags)
    else:
        dtype_flag = _last(flags, "--kv-cache-dtype")
        cache_k = cache_v = _engine_cache_type(dtype_flag[1] if dtype_flag else None)
        flash, parallel, gpu_layers = True, 1, None
        util_default = {VLLM: VLLM_DEFAULT_GPU_UTILIZATION, SGLANG: SGLANG_DEFAULT_MEM_FRACTION}
        util_flag = {VLLM: "--gpu-memory-utilization", SGLANG: "--mem-fraction-static"}
        util = (
            _fraction_flag(flags, util_flag[engine], util_default[engine])
            if engine in util_flag
            else None
        )
        token_flag = "--chunked-prefill-size" if engine == SGLANG else "--max-num-batched-tokens"
        tokens = _int_flag(flags, token_flag) or DEFAULT_BATCHED_TOKENS
    dtype = (_last(flags, "--dtype") or ("", "auto"))[1] or "auto"
    dtype_bytes = {"float": 4, "float32": 4, "half": 2, "float16": 2, "bfloat16": 2}.get(dtype)
    if engine in (VLLM, SGLANG) and dtype_bytes is None and meta.dtype == "F32":
        dtype_bytes = 2  # both engines load fp32 checkpoints in 16-bit under --dtype auto
    quant = (_last(flags, "--quantization", "-q") or ("", None))[1]
    return EngineSettings(
        engine=engine,
        context_length=context,
        cache_k=cache_k,
        cache_v=cache_v,
        gpu_memory_utilization=util,
        tensor_parallel_size=tp,
        parallel_sequences=parallel,
        batched_tokens=max(tokens, 1),
        max_sequences=_int_flag(flags, "--max-num-seqs", "--max-running-requests")
        or DEFAULT_MAX_SEQS,
        cuda_graphs=_last(flags, "--enforce-eager", "--disable-cuda-graph") is None,
        flash_attention=flash,
        gpu_layers=gpu_layers,
        kv_offload=_last(flags, "-nkvo", "--no-kv-offload") is None,
        dtype_bytes=dtype_bytes if engine != LLAMA_CPP else None,
        online_quantization=quant.lower() if quant and engine != LLAMA_CPP else None,
        notes=tuple(notes),
    )


def valid_tensor_parallel_sizes(
    num_attention_heads: int, max_gpus: int, num_kv_heads: int | None = None
) -> list[int]:
    """TP sizes up to ``max_gpus`` that split the attention heads evenly.

    KV heads must split evenly too, or be replicated (TP a multiple of the KV heads).
    """
    sizes = []
    for tp in range(1, max_gpus + 1):
        if num_attention_heads and num_attention_heads % tp:
            continue
        if num_kv_heads and num_kv_heads % tp and tp % num_kv_heads:
            continue
        sizes.append(tp)
    return sizes
