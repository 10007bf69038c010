"""Memory estimates against hand-computed figures, and their invariants."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from maasbase.common.errors import InvalidRequest
from maasbase.server.estimate import (
    EstimateRequest,
    InvalidBackendParameter,
    ModelMetadata,
    claimed_bytes,
    estimate_memory,
    fits_gpu,
    parse_flags,
    required_gpu_total,
    resolve_settings,
    valid_tensor_parallel_sizes,
)
from tests.support.model_files import LLAMA3_8B_METADATA as LLAMA3_8B
from tests.support.model_files import LLAMA3_70B_METADATA as LLAMA3_70B

MiB = 1024**2
GiB = 1024**3

# Overhead, see maasbase.server.estimate.memory: CUDA context + CUDA graphs (512 MiB each),
# 8192 batched tokens × (3 × ffn / TP + 4 × hidden) × 2 B, 256 sequences × vocab × 8 B.
SAMPLER = 256 * 128256 * 8
VLLM_8B_OVERHEAD = GiB + 8192 * (3 * 14336 + 4 * 4096) * 2 + SAMPLER


def _vllm(meta: ModelMetadata, *params: str, tp: int | None = None) -> EstimateRequest:
    return EstimateRequest("vllm", tuple(params), tp)


def test_llama3_8b_on_vllm_needs_one_gib_of_kv_cache_at_8k() -> None:
    est = estimate_memory(LLAMA3_8B, _vllm(LLAMA3_8B))

    # 32 layers × 8 KV heads × 128 head_dim × 8192 ctx × 2 B × 2 (K and V) = 1 GiB.
    assert est.kv_cache_bytes == 32 * 8 * 128 * 8192 * 2 * 2 == GiB
    assert est.weights_bytes == 16_060_522_496
    assert est.overhead_bytes == VLLM_8B_OVERHEAD == 2_309_488_640
    assert est.total_bytes == est.per_gpu_bytes == 16_060_522_496 + GiB + VLLM_8B_OVERHEAD
    assert est.gpu_memory_utilization == 0.9
    assert required_gpu_total(est) == math.ceil(est.per_gpu_bytes / 0.9)


def test_explain_spells_out_the_kv_formula() -> None:
    text = estimate_memory(LLAMA3_8B, _vllm(LLAMA3_8B)).explain()

    assert text.startswith("weights 14.96 GiB + KV cache 1.00 GiB (32 layers × 8 kv heads")
    assert "32 layers × 8 kv heads × 128 × 8192 ctx × 2 B × 2" in text
    assert "0.9 × GPU memory" in text


def test_max_model_len_and_fp8_kv_cache_shrink_the_cache() -> None:
    est = estimate_memory(
        LLAMA3_8B, _vllm(LLAMA3_8B, "--max-model-len", "4096", "--kv-cache-dtype", "fp8")
    )

    assert est.context_length == 4096
    assert est.kv_cache_bytes == 32 * 8 * 128 * 4096 * 1 * 2 == 256 * MiB


@pytest.mark.parametrize(
    "params",
    [
        ("--max-model-len", "4096"),
        ("--max-model-len=4096",),
        ("--max-model-len 4096",),
        ("--enforce-eager", "--max-model-len", "4096"),
        ("--max-model-len", "8192", "--max-model-len", "4096"),  # last one wins
        ("--max-model-len", "4K"),  # vLLM's human-readable form: K = 1024
        ("--max-model-len\t4096",),
    ],
)
def test_context_flag_spellings(params: tuple[str, ...]) -> None:
    assert resolve_settings(LLAMA3_8B, EstimateRequest("vllm", params)).context_length == 4096


def test_auto_context_means_the_model_maximum() -> None:
    settings = resolve_settings(LLAMA3_8B, EstimateRequest("vllm", ("--max-model-len", "auto")))

    assert settings.context_length == 8192


def test_llama_70b_split_over_four_gpus() -> None:
    est = estimate_memory(LLAMA3_70B, _vllm(LLAMA3_70B, "--tensor-parallel-size", "4"))

    # Each GPU holds 8 / 4 = 2 KV heads: 80 × 2 × 128 × 8192 × 2 B × 2 = 640 MiB.
    assert est.per_gpu_kv_cache_bytes == 80 * 2 * 128 * 8192 * 2 * 2 == 640 * MiB
    assert est.kv_cache_bytes == 4 * 640 * MiB == int(2.5 * GiB)
    assert est.per_gpu_weights_bytes == 141_107_412_992 // 4
    overhead = GiB + 8192 * (3 * 28672 // 4 + 4 * 8192) * 2 + SAMPLER
    assert est.per_gpu_overhead_bytes == overhead
    assert est.per_gpu_bytes == 141_107_412_992 // 4 + 640 * MiB + overhead
    assert fits_gpu(est, 80 * GiB)
    assert not fits_gpu(est, 32 * GiB)


def test_tp_beyond_kv_heads_replicates_them() -> None:
    est = estimate_memory(LLAMA3_70B, _vllm(LLAMA3_70B, tp=16))

    assert est.per_gpu_kv_cache_bytes == 80 * 1 * 128 * 8192 * 2 * 2
    assert est.kv_cache_bytes == 16 * est.per_gpu_kv_cache_bytes
    assert any("replicated" in note for note in est.notes)


def test_tp_that_does_not_divide_the_heads_is_refused_with_alternatives() -> None:
    with pytest.raises(InvalidBackendParameter, match=r"\[1, 2, 4, 8, 16, 32\]"):
        estimate_memory(LLAMA3_8B, _vllm(LLAMA3_8B, "-tp", "3"))


def test_conflicting_tp_between_flags_and_request_is_refused() -> None:
    with pytest.raises(InvalidBackendParameter, match="conflicts"):
        estimate_memory(LLAMA3_8B, _vllm(LLAMA3_8B, "-tp", "2", tp=4))


def test_vllm_claims_its_utilisation_share_of_any_gpu() -> None:
    est = estimate_memory(LLAMA3_8B, _vllm(LLAMA3_8B, "--gpu-memory-utilization", "0.5"))

    assert claimed_bytes(est, 80 * GiB) == 40 * GiB
    assert required_gpu_total(est) == math.ceil(est.per_gpu_bytes / 0.5)
    assert fits_gpu(est, 80 * GiB, free_bytes=40 * GiB)
    assert not fits_gpu(est, 80 * GiB, free_bytes=39 * GiB)
    assert not fits_gpu(est, 24 * GiB)  # 0.5 × 24 GiB is below the ~18 GiB needed


def test_sglang_uses_its_own_flags_and_mem_fraction() -> None:
    params = ("--context-length", "2048", "--tp-size", "2", "--kv-cache-dtype", "fp8_e4m3")
    est = estimate_memory(LLAMA3_8B, EstimateRequest("sglang", params))

    assert (est.context_length, est.tensor_parallel_size) == (2048, 2)
    assert est.per_gpu_kv_cache_bytes == 32 * 4 * 128 * 2048 * 1 * 2
    assert est.gpu_memory_utilization == 0.88


def test_llama_cpp_defaults_to_a_4096_context() -> None:
    est = estimate_memory(LLAMA3_8B, EstimateRequest("llama.cpp"))

    assert est.context_length == 4096
    assert est.kv_cache_bytes == 32 * 8 * 128 * 4096 * 2 * 2 == 512 * MiB
    # CUDA context + 512-token ubatch × the 128256-entry vocabulary × 4 B (f32 logits).
    assert est.overhead_bytes == 512 * MiB + 512 * 128256 * 4
    assert est.gpu_memory_utilization is None
    assert required_gpu_total(est) == est.per_gpu_bytes == claimed_bytes(est, 80 * GiB)
    assert "default context 4096" in est.explain()


def test_llama_cpp_quantised_cache_and_shared_parallel_slots() -> None:
    params = ("-c", "8192", "-np", "4", "--cache-type-k", "q8_0", "-ctv=q8_0")
    est = estimate_memory(LLAMA3_8B, EstimateRequest("llama.cpp", params))

    # q8_0 stores 32 values in 34 bytes; 4 slots share the 8192-token context.
    assert est.kv_cache_bytes == 32 * 8 * 128 * 8192 * 34 // 32 * 2 == 570_425_344
    assert "× 1.0625 B × 2" in est.explain()


def test_llama_cpp_without_flash_attention_adds_attention_scores() -> None:
    with_fa = estimate_memory(LLAMA3_8B, EstimateRequest("llama.cpp", ("-c", "8192")))
    without = estimate_memory(LLAMA3_8B, EstimateRequest("llama.cpp", ("-c", "8192", "-fa", "off")))

    assert without.overhead_bytes - with_fa.overhead_bytes == 512 * 8192 * 32 * 4


def test_llama_cpp_context_zero_means_trained_context() -> None:
    assert (
        resolve_settings(LLAMA3_8B, EstimateRequest("llama.cpp", ("-c", "0"))).context_length
        == 8192
    )


def test_llama_cpp_partial_offload_keeps_layers_on_the_cpu() -> None:
    est = estimate_memory(LLAMA3_8B, EstimateRequest("llama.cpp", ("-ngl", "16")))

    assert est.per_gpu_weights_bytes == 16_060_522_496 // 2
    assert est.per_gpu_kv_cache_bytes == 256 * MiB  # half of the 512 MiB at 4096 ctx
    assert est.kv_cache_bytes == 512 * MiB
    assert est.total_bytes > est.per_gpu_bytes


def test_llama_cpp_kv_in_host_memory_leaves_the_gpu() -> None:
    est = estimate_memory(LLAMA3_8B, EstimateRequest("llama.cpp", ("--no-kv-offload",)))

    assert est.per_gpu_kv_cache_bytes == 0
    assert est.kv_cache_bytes == 512 * MiB


def test_online_fp8_halves_all_but_embedding_and_head() -> None:
    est = estimate_memory(LLAMA3_8B, _vllm(LLAMA3_8B, "--quantization", "fp8"))
    embed_and_head = 2 * 128256 * 4096 * 2

    assert est.weights_bytes == embed_and_head + (16_060_522_496 - embed_and_head) // 2


def test_fp32_checkpoints_load_in_16_bit_unless_asked() -> None:
    fp32 = replace(LLAMA3_8B, dtype="F32", weight_bytes=2 * 16_060_522_496)

    assert estimate_memory(fp32, _vllm(fp32)).weights_bytes == 16_060_522_496
    assert (
        estimate_memory(fp32, _vllm(fp32, "--dtype", "float32")).weights_bytes == 2 * 16_060_522_496
    )


def test_encoder_models_have_no_kv_cache() -> None:
    bert = replace(LLAMA3_8B, architecture="bert", is_embedding=True)

    est = estimate_memory(bert, _vllm(bert))

    assert est.kv_cache_bytes == 0
    assert "none" in est.kv_formula


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (("--max-model-len", "lots"), "integer"),
        (("--max-model-len", "100000"), "exceeds the model's maximum 8192"),
        (("--gpu-memory-utilization", "1.5"), r"\(0, 1\]"),
        (("--kv-cache-dtype", "int3"), "not a known KV cache dtype"),
        (("-tp", "0"), "must be ≥ 1"),
    ],
)
def test_bad_vllm_parameters_are_invalid_requests(params: tuple[str, ...], message: str) -> None:
    with pytest.raises(InvalidBackendParameter, match=message) as excinfo:
        estimate_memory(LLAMA3_8B, _vllm(LLAMA3_8B, *params))
    assert isinstance(excinfo.value, InvalidRequest)
    assert excinfo.value.status_code == 400


def test_bad_llama_cpp_cache_type_is_refused() -> None:
    with pytest.raises(InvalidBackendParameter, match="q9_9"):
        estimate_memory(LLAMA3_8B, EstimateRequest("llama.cpp", ("-ctk", "q9_9")))


def test_parse_flags_handles_bare_flags_and_negative_numbers() -> None:
    flags = parse_flags(
        ["--enforce-eager", "--max-model-len", "-1", "-c=2048", "--trust-remote-code"]
    )

    assert flags == [
        ("--enforce-eager", None),
        ("--max-model-len", "-1"),
        ("-c", "2048"),
        ("--trust-remote-code", None),
    ]


def test_valid_tensor_parallel_sizes() -> None:
    assert valid_tensor_parallel_sizes(32, 8) == [1, 2, 4, 8]
    assert valid_tensor_parallel_sizes(40, 8) == [1, 2, 4, 5, 8]
    assert valid_tensor_parallel_sizes(40, 8, num_kv_heads=8) == [1, 2, 4, 8]
    assert valid_tensor_parallel_sizes(28, 8, num_kv_heads=4) == [1, 2, 4]


# ---------------------------------------------------------------------------- properties

HEADS = st.sampled_from([1, 2, 4, 8, 16, 32, 64, 128])


@st.composite
def models(draw: st.DrawFn) -> ModelMetadata:
    heads = draw(HEADS)
    kv = draw(st.sampled_from([d for d in (1, 2, 4, 8, 16, 32, 64, 128) if heads % d == 0]))
    head_dim = draw(st.sampled_from([64, 80, 128, 256]))
    return ModelMetadata(
        architecture="llama",
        num_layers=draw(st.integers(1, 128)),
        num_attention_heads=heads,
        num_kv_heads=kv,
        head_dim=head_dim,
        hidden_size=heads * head_dim,
        max_context=draw(st.sampled_from([2048, 4096, 32768, 131072])),
        weight_bytes=draw(st.integers(1, 500 * GiB)),
        dtype="BF16",
        vocab_size=draw(st.integers(1000, 260_000)),
        intermediate_size=draw(st.none() | st.integers(64, 65536)),
    )


ENGINES = st.sampled_from(["vllm", "sglang", "llama.cpp", "other"])


@given(models(), ENGINES)
def test_per_gpu_bytes_never_grow_with_more_gpus(meta: ModelMetadata, engine: str) -> None:
    sizes = valid_tensor_parallel_sizes(meta.num_attention_heads, 16, meta.num_kv_heads)
    per_gpu = [estimate_memory(meta, EstimateRequest(engine, (), tp)).per_gpu_bytes for tp in sizes]

    assert per_gpu == sorted(per_gpu, reverse=True)


@given(models(), ENGINES, st.integers(1, 1024))
def test_kv_cache_is_linear_in_context(meta: ModelMetadata, engine: str, ctx: int) -> None:
    ctx = min(ctx, meta.max_context // 2)
    flag = {"vllm": "--max-model-len", "sglang": "--context-length"}.get(engine, "-c")
    one = estimate_memory(meta, EstimateRequest(engine, (flag, str(ctx))))
    two = estimate_memory(meta, EstimateRequest(engine, (flag, str(2 * ctx))))

    assert two.kv_cache_bytes == 2 * one.kv_cache_bytes


@given(models(), ENGINES, st.sampled_from([1, 2, 4, 8]))
def test_estimate_covers_the_weights(meta: ModelMetadata, engine: str, tp: int) -> None:
    if tp not in valid_tensor_parallel_sizes(meta.num_attention_heads, tp, meta.num_kv_heads):
        tp = 1
    est = estimate_memory(meta, EstimateRequest(engine, (), tp))

    assert est.total_bytes == est.weights_bytes + est.kv_cache_bytes + est.overhead_bytes
    assert est.total_bytes >= meta.weight_bytes
    assert est.per_gpu_bytes * tp >= est.total_bytes
    assert est.per_gpu_bytes >= est.per_gpu_weights_bytes
    assert required_gpu_total(est) >= est.per_gpu_bytes
    assert fits_gpu(est, required_gpu_total(est))


@given(st.integers(1, 1 << 20), st.sampled_from(["--max-model-len", "-c", "--ctx-size"]))
def test_flag_spellings_parse_alike(value: int, flag: str) -> None:
    expected = [(flag, str(value))]

    assert parse_flags([flag, str(value)]) == expected
    assert parse_flags([f"{flag}={value}"]) == expected
    assert parse_flags([f"{flag} {value}"]) == expected
