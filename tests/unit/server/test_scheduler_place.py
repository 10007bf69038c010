"""Placement scenarios on realistic machines, with exact placements and reason strings."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

import maasbase
from maasbase.common.errors import InvalidRequest
from maasbase.common.hardware import GpuDevice, GpuVendor, HardwareReport, SystemInfo
from maasbase.common.workers import WorkerState
from maasbase.server.estimate import EstimateRequest, MemoryEstimate, ModelMetadata
from maasbase.server.scheduler import (
    CapacityIndex,
    Claim,
    GpuClaim,
    GpuRef,
    InvalidGpuSelector,
    InvalidPlacementRequest,
    Placement,
    PlacementRequest,
    RamClaim,
    Strategy,
    Unschedulable,
    WorkerSnapshot,
    estimate_table,
    evaluate,
    place,
)
from tests.support.model_files import LLAMA3_8B_METADATA as LLAMA3_8B
from tests.support.model_files import LLAMA3_70B_METADATA as LLAMA3_70B

GiB = 1024**3
NV = GpuVendor.NVIDIA
FIXTURES = Path(maasbase.__file__).parent / "worker" / "hardware" / "fixtures"
H100_TOTAL = 85_520_809_984  # bytes, from the 8xH100 fixture
RTX4090_TOTAL = 25_757_220_864


def fixture_worker(
    wid: int,
    name: str,
    fixture: str,
    labels: dict[str, str] | None = None,
    state: WorkerState = WorkerState.READY,
) -> WorkerSnapshot:
    data = json.loads((FIXTURES / f"{fixture}.json").read_text())
    system = SystemInfo(**data["system"], disk_total=0, disk_free=0, hostname=name)
    report = HardwareReport(system=system, gpus=data["gpus"])
    return WorkerSnapshot.from_report(wid, name, report, state=state, labels=labels)


def cluster() -> CapacityIndex:
    return CapacityIndex(
        [
            fixture_worker(1, "h100", "8xH100-80GB", {"gpu": "h100"}),
            fixture_worker(2, "rtx", "mixed-4090-4080", {"gpu": "rtx"}),
            fixture_worker(3, "cpu", "cpu-only"),
            fixture_worker(4, "ascend", "8xAscend-910B-64GB", {"gpu": "910b"}),
            fixture_worker(5, "mac", "apple-m2-max-96GB"),
            fixture_worker(6, "h100-b", "8xH100-80GB", {"gpu": "h100"}, WorkerState.MAINTENANCE),
        ]
    )


def fixed(per_gpu_gib: float, tp: int = 1, engine: str = "llama.cpp") -> MemoryEstimate:
    """An estimate whose claim is its size (llama.cpp-like)."""
    per_gpu = int(per_gpu_gib * GiB)
    return MemoryEstimate(
        engine, 4096, tp, per_gpu * tp, 0, 0, per_gpu * tp, per_gpu, 0, 0, per_gpu, None, "-"
    )


def vllm(meta: ModelMetadata, **extra: Any) -> PlacementRequest:
    return PlacementRequest(
        "llama",
        "vllm",
        estimate_table(meta, EstimateRequest("vllm")),
        num_attention_heads=meta.num_attention_heads,
        num_kv_heads=meta.num_kv_heads,
        **extra,
    )


def gpus_of(result: Placement | Unschedulable) -> list[tuple[int, int]]:
    assert isinstance(result, Placement), str(result)
    return [(c.gpu.worker_id, c.gpu.index) for c in result.claim.gpus]


def test_binpack_puts_a_small_vllm_model_on_the_tightest_gpu_that_fits() -> None:
    result = place(vllm(LLAMA3_8B, strategy=Strategy.BINPACK), cluster())

    # 8B on vLLM needs a GPU of ≥ 20.1 GiB; the 4090 (24 GiB) is the tightest, the
    # 4080 (16 GiB) too small.
    assert isinstance(result, Placement)
    assert result.claim == Claim(gpus=(GpuClaim(GpuRef(2, NV, 0), int(0.9 * RTX4090_TOTAL)),))
    assert (result.tp_size, result.pp_size, result.worker_ids) == (1, 1, (2,))
    assert result.explanation == (
        "rtx GPU nvidia:0 (tensor parallel 1): 21.6 GiB per GPU (vllm takes 0.9 × GPU memory); "
        "binpack: tightest fit, 2.4 GiB left on the chosen GPU"
    )
    assert result.score == 90.0


def test_spread_puts_it_on_the_freest_gpu_of_the_least_loaded_worker() -> None:
    result = place(vllm(LLAMA3_8B, strategy=Strategy.SPREAD), cluster())

    assert gpus_of(result) == [(1, 7)]
    assert isinstance(result, Placement)
    assert result.claim.gpus[0].bytes == int(0.9 * H100_TOTAL)


def _two_h100s() -> CapacityIndex:
    return CapacityIndex(
        [fixture_worker(1, "a", "8xH100-80GB"), fixture_worker(2, "b", "8xH100-80GB")]
    )


def test_binpack_fills_every_gpu_of_a_worker_before_opening_the_next() -> None:
    capacity = _two_h100s()
    request = vllm(LLAMA3_8B, strategy=Strategy.BINPACK)
    placed = []
    for n in range(9):
        result = place(request, capacity)
        assert isinstance(result, Placement)
        capacity.reserve(n, result.claim)
        placed += gpus_of(result)

    assert placed == [(1, i) for i in range(8)] + [(2, 0)]


def test_binpack_shares_a_gpu_until_it_is_full() -> None:
    capacity = _two_h100s()
    request = PlacementRequest("q", "llama.cpp", {1: fixed(16.2)}, strategy=Strategy.BINPACK)
    placed = []
    for n in range(5):
        result = place(request, capacity)
        assert isinstance(result, Placement)
        capacity.reserve(n, result.claim)
        placed += gpus_of(result)

    assert placed == [(1, 0)] * 4 + [(1, 1)]  # 4 × 16.2 GiB fit in 79.6 GiB


def test_spread_alternates_between_workers() -> None:
    capacity = _two_h100s()
    request = vllm(LLAMA3_8B, strategy=Strategy.SPREAD)
    workers = []
    for n in range(4):
        result = place(request, capacity)
        assert isinstance(result, Placement)
        capacity.reserve(n, result.claim)
        workers.append(result.worker_ids[0])

    assert workers == [2, 1, 2, 1]


def test_a_70b_model_takes_the_smallest_tensor_parallel_size_that_fits() -> None:
    result = place(vllm(LLAMA3_70B, strategy=Strategy.BINPACK), cluster())

    # 137 GiB on one GPU fits nowhere; 69.4 GiB per GPU over two H100s does.
    assert gpus_of(result) == [(1, 0), (1, 1)]
    assert isinstance(result, Placement)
    assert result.tp_size == 2
    assert result.estimate is not None
    assert result.estimate.tensor_parallel_size == 2
    assert {c.bytes for c in result.claim.gpus} == {int(0.9 * H100_TOTAL)}


def test_unschedulable_gives_one_specific_reason_per_worker() -> None:
    capacity = cluster()
    capacity.reserve("other", Claim(gpus=(GpuClaim(GpuRef(2, NV, 0), int(0.9 * GiB)),)))
    request = PlacementRequest("big", "llama.cpp", {1: fixed(41.2)}, worker_selector={"gpu": "rtx"})

    result = place(request, capacity)

    assert isinstance(result, Unschedulable)
    assert result.message == (
        "cannot place 'big' (llama.cpp) on any of 6 workers; the reason per worker says what "
        "to change"
    )
    assert result.reasons == {
        "ascend": "labels gpu=rtx not matched (has gpu=910b)",
        "cpu": "labels gpu=rtx not matched (has no gpu label)",
        "h100": "labels gpu=rtx not matched (has gpu=h100)",
        "h100-b": "in maintenance",
        "mac": "labels gpu=rtx not matched (has no gpu label)",
        "rtx": "needs 41.2 GiB VRAM per GPU, 23.1 GiB free on best GPU",
    }


def test_reasons_name_vendor_size_and_tensor_parallel_limits() -> None:
    result = place(vllm(LLAMA3_70B, worker_selector={"gpu": "rtx"}), cluster())

    assert isinstance(result, Unschedulable)
    assert result.reasons["rtx"] == (
        "needs a GPU with at least 152.2 GiB of memory (vllm uses 0.9 of it), largest has "
        "24.0 GiB; tensor parallel 2 needs 2 GPUs of one model, has 1"
    )

    result = place(PlacementRequest("big", "llama.cpp", {1: fixed(500)}), cluster())

    assert isinstance(result, Unschedulable)
    assert result.reasons["ascend"] == "no GPU of a supported vendor (nvidia)"
    assert result.reasons["cpu"] == "no GPU of a supported vendor (nvidia)"
    assert result.reasons["h100"] == "needs 500.0 GiB VRAM per GPU, 79.6 GiB free on best GPU"


def test_manual_gpu_selection_is_honoured_exactly() -> None:
    capacity = cluster()
    request = vllm(LLAMA3_8B, gpu_selector=("h100:2", "h100:nvidia:5"), gpus_per_replica=2)

    first = place(request, capacity)
    assert gpus_of(first) == [(1, 2), (1, 5)]
    assert isinstance(first, Placement)
    capacity.reserve("r1", first.claim)

    second = place(request, capacity)

    assert isinstance(second, Unschedulable)
    assert second.reasons["h100"] == (
        "tensor parallel 2 needs 71.7 GiB VRAM on each of 2 selected GPUs, 0 have it"
    )
    assert second.reasons["rtx"] == "not named in gpu_selector"
    assert second.reasons["h100-b"] == "in maintenance"


def test_manual_selection_without_a_count_takes_the_fewest_selected_gpus() -> None:
    request = vllm(
        LLAMA3_70B, strategy=Strategy.BINPACK, gpu_selector=tuple(f"h100:{i}" for i in (7, 3, 5))
    )

    assert gpus_of(place(request, cluster())) == [(1, 3), (1, 5)]


def test_manual_selection_reasons() -> None:
    request = vllm(LLAMA3_8B, gpu_selector=("h100:9", "ghost:0", "rtx:0"), gpus_per_replica=1)
    result = place(replace(request, worker_selector={"gpu": "h100"}), cluster())

    assert isinstance(result, Unschedulable)
    assert result.reasons["h100"] == "GPU 9 named in gpu_selector does not exist"
    assert result.reasons["ghost"] == "no such worker (named in gpu_selector)"
    assert result.reasons["rtx"] == "labels gpu=h100 not matched (has gpu=rtx)"

    odd = vllm(LLAMA3_8B, gpu_selector=("h100:0", "h100:1", "h100:2"), gpus_per_replica=3)
    result = place(odd, cluster())

    assert isinstance(result, Unschedulable)
    assert result.reasons["h100"] == "tensor parallel 3 does not divide 32 attention heads"


def test_cpu_only_workers_take_llama_cpp_models_in_ram() -> None:
    request = PlacementRequest(
        "q",
        "llama.cpp",
        {1: fixed(200)},
        vendors=frozenset({"nvidia", "cpu"}),
        cpu_ram_bytes=20 * GiB,
    )

    result = place(request, cluster())

    assert isinstance(result, Placement)
    assert result.claim == Claim(ram=(RamClaim(3, 20 * GiB),))
    assert (result.tp_size, result.worker_ids) == (0, (3,))

    result = place(replace(request, cpu_ram_bytes=70 * GiB), cluster())

    assert isinstance(result, Unschedulable)
    assert result.reasons["cpu"] == "needs 70.0 GiB RAM, 62.8 GiB free"
    assert result.reasons["ascend"] == (
        "no GPU of a supported vendor (nvidia); CPU placements go to workers without GPUs"
    )


def test_other_vendors_place_like_nvidia() -> None:
    ascend = PlacementRequest(
        "m", "mindie", {1: fixed(30, engine="other")}, vendors=frozenset({"ascend"})
    )
    apple = PlacementRequest("m", "llama.cpp", {1: fixed(30)}, vendors=frozenset({"apple"}))

    assert gpus_of(place(replace(ascend, strategy=Strategy.BINPACK), cluster())) == [(4, 0)]
    assert gpus_of(place(apple, cluster())) == [(5, 0)]


def test_workers_holding_the_model_files_win_over_the_strategy() -> None:
    request = vllm(LLAMA3_8B, strategy=Strategy.SPREAD, preferred_worker_ids=frozenset({2}))

    result = place(request, cluster())

    assert gpus_of(result) == [(2, 0)]
    assert isinstance(result, Placement)
    assert result.explanation.startswith("model files already on rtx; ")

    # A preferred worker that cannot take the model does not block the others.
    assert gpus_of(place(replace(request, preferred_worker_ids=frozenset({3})), cluster())) == [
        (1, 7)
    ]


def _l40s_pair() -> CapacityIndex:
    def l40s(i: int) -> GpuDevice:
        return GpuDevice(
            index=i, vendor=NV, name="L40S", uuid=f"L40S-{i}", memory_total=45 * GiB, memory_used=0
        )

    return CapacityIndex(
        [
            WorkerSnapshot(w, f"l{w}", WorkerState.READY, {}, (l40s(0), l40s(1)), 256 * GiB)
            for w in (1, 2)
        ]
    )


def test_backends_that_span_workers_get_a_group_on_each() -> None:
    request = vllm(LLAMA3_70B, can_span_workers=True, strategy=Strategy.BINPACK)

    result = place(request, _l40s_pair())

    # 35.6 GiB per GPU at 4 GPUs: 2 GPUs on each of the two 2-GPU workers.
    assert gpus_of(result) == [(1, 0), (1, 1), (2, 0), (2, 1)]
    assert isinstance(result, Placement)
    assert (result.tp_size, result.pp_size, result.worker_ids) == (2, 2, (1, 2))
    assert "tensor parallel 2 × pipeline parallel 2" in result.explanation


def test_without_spanning_the_same_model_is_unschedulable() -> None:
    result = place(vllm(LLAMA3_70B), _l40s_pair())

    assert isinstance(result, Unschedulable)
    assert result.reasons["l1"] == (
        "needs a GPU with at least 152.2 GiB of memory (vllm uses 0.9 of it), largest has "
        "45.0 GiB; tensor parallel 2 needs GPUs with at least 77.1 GiB of memory (vllm uses "
        "0.9 of it), largest has 45.0 GiB; tensor parallel 4 needs 4 GPUs of one model, has 2"
    )


def test_dry_run_answers_without_reserving_anything() -> None:
    capacity = cluster()
    request = vllm(LLAMA3_8B, strategy=Strategy.BINPACK)
    before = capacity.free_map()

    dry = evaluate(request, capacity)

    assert capacity.free_map() == before
    assert capacity.claims() == {}
    assert isinstance(dry, Placement)
    real = place(request, capacity)
    assert isinstance(real, Placement)
    assert dry.claim == real.claim
    assert set(dry.reasons) == {"h100", "cpu", "ascend", "mac", "h100-b"}
    assert dry.reasons["h100"] == "fits too; rtx was chosen: binpack prefers it"
    assert dry.reasons["ascend"] == "no GPU of a supported vendor (nvidia)"
    assert real.reasons == {}


def test_no_ready_worker() -> None:
    capacity = CapacityIndex(
        [
            fixture_worker(1, "new", "8xH100-80GB", state=WorkerState.NOT_READY),
            fixture_worker(2, "lost", "8xH100-80GB", state=WorkerState.UNREACHABLE),
        ]
    )

    result = place(vllm(LLAMA3_8B), capacity)

    assert isinstance(result, Unschedulable)
    assert result.message.endswith(": no worker is ready")
    assert result.reasons == {
        "lost": "unreachable: no heartbeat within the timeout",
        "new": "not ready: no heartbeat yet",
    }
    empty = place(vllm(LLAMA3_8B), CapacityIndex())
    assert isinstance(empty, Unschedulable)
    assert "no workers are registered" in empty.message


@pytest.mark.parametrize(
    "kwargs",
    [
        {"vendors": frozenset({"tpu"})},
        {"vendors": frozenset()},
        {"gpus_per_replica": 2},
        {"vendors": frozenset({"cpu"})},
        {"estimates": {}},
        {"estimates": {0: fixed(1)}},
    ],
)
def test_malformed_requests_are_rejected(kwargs: dict[str, Any]) -> None:
    base: dict[str, Any] = {"model": "m", "backend": "vllm", "estimates": {1: fixed(1)}}
    with pytest.raises(InvalidPlacementRequest):
        PlacementRequest(**(base | kwargs))


def test_a_malformed_gpu_selector_says_how_to_write_it() -> None:
    request = PlacementRequest("m", "vllm", {1: fixed(1)}, gpu_selector=("h100/0",))

    with pytest.raises(InvalidGpuSelector, match="use worker-name:index") as info:
        place(request, cluster())
    assert isinstance(info.value, InvalidRequest)


def test_estimate_table_tries_powers_of_two_unless_the_flags_pin_one() -> None:
    assert sorted(estimate_table(LLAMA3_8B, EstimateRequest("vllm"))) == [1, 2, 4, 8]
    assert sorted(estimate_table(LLAMA3_8B, EstimateRequest("vllm"), max_gpus=2)) == [1, 2]
    pinned = EstimateRequest("vllm", ("--tensor-parallel-size", "2"))
    assert sorted(estimate_table(LLAMA3_8B, pinned)) == [2]
    assert sorted(estimate_table(LLAMA3_8B, EstimateRequest("vllm", ("-tp", "1")))) == [1]
    odd_heads = replace(LLAMA3_8B, num_attention_heads=12, num_kv_heads=12)
    assert sorted(estimate_table(odd_heads, EstimateRequest("vllm"))) == [1, 2, 4]
