"""Pure GPU memory estimates: model metadata + engine settings → bytes per GPU.

Estimate = weights + KV cache + overhead, where the KV cache for one full context is
``2 (K and V) × layers × kv_heads × head_dim × context × bytes per element`` and the
overhead covers the CUDA context, CUDA graphs and activation / compute buffers. Engine
defaults (context, utilisation, batch sizes) live in :mod:`.settings`.

Overhead constants and where they come from (all per GPU; a budget, not a measurement):

- ``CUDA_CONTEXT_BYTES`` 512 MiB: CUDA context, cuBLAS workspaces and NCCL buffers — what
  vLLM reports as "non-torch memory" at start-up on H100-class GPUs (0.3–0.6 GiB) and the
  gap between llama.cpp's own buffer totals and what ``nvidia-smi`` shows.
- ``CUDA_GRAPH_BYTES`` 512 MiB: vLLM/SGLang capture CUDA graphs for decode batch sizes
  (vLLM logs 0.2–1 GiB for 7–70B models); dropped with ``--enforce-eager`` /
  ``--disable-cuda-graph``.
- vLLM/SGLang activations: the profiling forward pass over the batched tokens (8192) peaks
  inside the MLP at about ``(3 × intermediate / TP + 4 × hidden) × 2 B`` per token, plus
  fp32 logits and probabilities (8 B × vocab) for each of the 256 sequences at sampling.
  An unknown intermediate size is taken as ``4 × hidden``.
- llama.cpp compute buffer: ``--ubatch-size`` tokens × max(vocab, 3 × ffn + 4 × hidden)
  × 4 B (f32 graph tensors; the output logits dominate for large vocabularies), plus the
  ``ubatch × context × heads × 4 B`` attention scores when flash attention is off.
- ``--dtype`` casts float checkpoints (vLLM/SGLang load fp32 files in 16 bit by default);
  online ``--quantization fp8`` halves, ``bitsandbytes`` takes 4.5/16 of, the 16-bit
  weights except embedding and LM head.

Sliding-window layers are sized for the full context (an upper bound).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .metadata import ModelMetadata
from .settings import LLAMA_CPP, CacheType, EngineSettings, EstimateRequest, resolve_settings

MiB = 1024**2
GiB = 1024**3
CUDA_CONTEXT_BYTES = 512 * MiB
CUDA_GRAPH_BYTES = 512 * MiB
ACTIVATION_BYTES = 2
SAMPLER_BYTES_PER_VOCAB_ENTRY = 8
_FLOAT_LABELS = {"F16": 2, "BF16": 2, "F32": 4}


@dataclass(frozen=True, slots=True)
class MemoryEstimate:
    """Totals cover the whole deployment (all GPUs, and host memory for llama.cpp layers
    kept on the CPU); ``per_gpu_*`` is what each GPU holds."""

    engine: str
    context_length: int
    tensor_parallel_size: int
    weights_bytes: int
    kv_cache_bytes: int
    overhead_bytes: int
    total_bytes: int
    per_gpu_weights_bytes: int
    per_gpu_kv_cache_bytes: int
    per_gpu_overhead_bytes: int
    per_gpu_bytes: int
    gpu_memory_utilization: float | None
    kv_formula: str
    notes: tuple[str, ...] = ()

    def explain(self) -> str:
        text = (
            f"weights {_gib(self.weights_bytes)} + KV cache {_gib(self.kv_cache_bytes)} "
            f"({self.kv_formula}) + overhead {_gib(self.overhead_bytes)} "
            f"= {_gib(self.total_bytes)}"
        )
        if self.tensor_parallel_size > 1:
            text += f"; {_gib(self.per_gpu_bytes)} per GPU over {self.tensor_parallel_size} GPUs"
        if self.gpu_memory_utilization is not None:
            text += (
                f"; {self.engine} claims {self.gpu_memory_utilization:g} × GPU memory, "
                f"so each GPU needs ≥ {_gib(required_gpu_total(self))}"
            )
        return "; ".join([text, *self.notes])


def _gib(n: int) -> str:
    return f"{n / GiB:.2f} GiB"


def _loaded_weight_bytes(meta: ModelMetadata, settings: EngineSettings) -> int:
    """Weights as the engine holds them: ``--dtype`` casts and online quantisation."""
    weights = meta.weight_bytes
    file_bytes = _FLOAT_LABELS.get(meta.dtype)
    if file_bytes is None:
        return weights  # quantised checkpoints load as stored
    if settings.dtype_bytes is not None:
        weights = weights * settings.dtype_bytes // file_bytes
        file_bytes = settings.dtype_bytes
    scale = {"fp8": 1 / 2, "bitsandbytes": 4.5 / 16}.get(settings.online_quantization or "")
    if scale is not None:
        # Embedding and LM head stay in 16 bit (assumed untied: counted twice).
        embed = min(weights, 2 * meta.vocab_size * meta.hidden_size * file_bytes)
        weights = embed + int((weights - embed) * scale * 2 / file_bytes)
    return weights


def kv_cache_bytes(
    meta: ModelMetadata, context: int, cache_k: CacheType, cache_v: CacheType, head_split: int = 1
) -> int:
    """KV cache for ``context`` tokens; ``head_split`` > 1 gives one TP rank's share."""
    per_token = 0
    for heads in meta.kv_heads_by_layer:
        local = -(-heads // head_split)
        per_token += cache_k.row_bytes(local * meta.head_dim)
        per_token += cache_v.row_bytes(local * meta.v_head_dim)
    return per_token * context


def _kv_formula(meta: ModelMetadata, s: EngineSettings) -> str:
    if not meta.has_kv_cache:
        return "none: encoder-only or attention-free model"
    k_bytes, v_bytes = s.cache_k.size / s.cache_k.block, s.cache_v.size / s.cache_v.block
    if meta.layer_kv_heads is None and meta.v_head_dim == meta.head_dim and k_bytes == v_bytes:
        return (
            f"{meta.num_layers} layers × {meta.num_kv_heads} kv heads × {meta.head_dim} × "
            f"{s.context_length} ctx × {k_bytes:g} B × 2"
        )
    return (
        f"{sum(meta.kv_heads_by_layer)} kv heads over {meta.num_layers} layers × "
        f"({meta.head_dim} K × {k_bytes:g} B + {meta.v_head_dim} V × {v_bytes:g} B) × "
        f"{s.context_length} ctx"
    )


def _overhead_per_gpu(meta: ModelMetadata, s: EngineSettings) -> int:
    hidden = meta.hidden_size
    ffn = meta.intermediate_size or 4 * hidden
    if s.engine == LLAMA_CPP:
        widest = max(3 * ffn + 4 * hidden, 0 if meta.is_embedding else meta.vocab_size)
        compute = s.batched_tokens * widest * 4
        if not s.flash_attention:
            compute += s.batched_tokens * s.context_length * meta.num_attention_heads * 4
        return CUDA_CONTEXT_BYTES + compute
    per_token = (3 * -(-ffn // s.tensor_parallel_size) + 4 * hidden) * ACTIVATION_BYTES
    sampler = 0 if meta.is_embedding else s.max_sequences * meta.vocab_size
    activations = s.batched_tokens * per_token + sampler * SAMPLER_BYTES_PER_VOCAB_ENTRY
    return CUDA_CONTEXT_BYTES + (CUDA_GRAPH_BYTES if s.cuda_graphs else 0) + activations


def estimate_memory(meta: ModelMetadata, request: EstimateRequest) -> MemoryEstimate:
    """Estimate the GPU memory to serve ``meta`` with ``request``'s engine and flags."""
    s = resolve_settings(meta, request)
    gpus = s.tensor_parallel_size
    weights = _loaded_weight_bytes(meta, s)
    notes = list(s.notes)
    if s.engine == LLAMA_CPP:
        # llama.cpp splits layers (not heads) across GPUs; -ngl keeps some on the CPU.
        share = 1.0
        if s.gpu_layers is not None and 0 <= s.gpu_layers < meta.num_layers:
            share = s.gpu_layers / meta.num_layers
            notes.append(f"{s.gpu_layers}/{meta.num_layers} layers offloaded to GPU")
        # KV of CPU layers (or all of it with --no-kv-offload) stays in host memory.
        kv_total = kv_cache_bytes(meta, s.context_length, s.cache_k, s.cache_v)
        kv_on_gpus = int(kv_total * share) if s.kv_offload else 0
        gpu_weights = -(-int(weights * share) // gpus)
        gpu_kv = -(-kv_on_gpus // gpus)
    else:
        gpu_weights = -(-weights // gpus)
        gpu_kv = kv_cache_bytes(meta, s.context_length, s.cache_k, s.cache_v, head_split=gpus)
        kv_total = gpu_kv * gpus
        if gpus > meta.num_kv_heads > 0:
            notes.append(f"{meta.num_kv_heads} KV heads are replicated over {gpus} GPUs")
    overhead = _overhead_per_gpu(meta, s)
    return MemoryEstimate(
        engine=s.engine,
        context_length=s.context_length,
        tensor_parallel_size=gpus,
        weights_bytes=weights,
        kv_cache_bytes=kv_total,
        overhead_bytes=overhead * gpus,
        total_bytes=weights + kv_total + overhead * gpus,
        per_gpu_weights_bytes=gpu_weights,
        per_gpu_kv_cache_bytes=gpu_kv,
        per_gpu_overhead_bytes=overhead,
        per_gpu_bytes=gpu_weights + gpu_kv + overhead,
        gpu_memory_utilization=s.gpu_memory_utilization,
        kv_formula=_kv_formula(meta, s),
        notes=tuple(notes),
    )


def required_gpu_total(estimate: MemoryEstimate) -> int:
    """Smallest total GPU memory on which each GPU's share fits.

    vLLM/SGLang only use ``utilization × total``, so the share must fit in that fraction.
    """
    if estimate.gpu_memory_utilization is None:
        return estimate.per_gpu_bytes
    return math.ceil(estimate.per_gpu_bytes / estimate.gpu_memory_utilization)


def claimed_bytes(estimate: MemoryEstimate, gpu_total_bytes: int) -> int:
    """Memory the engine takes on a GPU of ``gpu_total_bytes`` (vLLM: util × total)."""
    if estimate.gpu_memory_utilization is None:
        return estimate.per_gpu_bytes
    return int(estimate.gpu_memory_utilization * gpu_total_bytes)


def fits_gpu(estimate: MemoryEstimate, gpu_total_bytes: int, free_bytes: int | None = None) -> bool:
    """Whether one share fits a GPU of that size (and, if given, its free memory)."""
    if required_gpu_total(estimate) > gpu_total_bytes:
        return False
    return free_bytes is None or claimed_bytes(estimate, gpu_total_bytes) <= free_bytes
