"""Scheduler throughput: 1,000 simulated workers × 8 GPUs, 10,000 instances to place.

Prints decisions per second and p50 / p99 / max decision latency (``place`` + ``reserve``
of one instance, on one core), then the same request sequence decided by a naive
scheduler that rescans every worker, GPU and placed instance per decision — as GPUStack
2.3.0's placement path does — on 10, 100 and 1,000 workers, with the ratio. The naive
scheduler applies the same policy, so the run also counts how often both chose the same
GPUs.

Run: ``python bench/scheduler_bench.py`` (under 20 seconds).
"""

from __future__ import annotations

import random
import statistics
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace

from maasbase.common.hardware import GpuDevice, GpuVendor
from maasbase.common.workers import WorkerState
from maasbase.server.estimate import (
    EstimateRequest,
    MemoryEstimate,
    ModelMetadata,
    claimed_bytes,
    required_gpu_total,
)
from maasbase.server.scheduler import (
    CapacityIndex,
    Claim,
    GpuClaim,
    GpuRef,
    Placement,
    PlacementRequest,
    Strategy,
    Unschedulable,
    WorkerSnapshot,
    estimate_table,
    evaluate,
    place,
)

GiB = 1024**3
MiB = 1024**2
# (weight, vendor, GPU name, MiB per GPU as the vendor tool reports it)
SHAPES = [
    (40, GpuVendor.NVIDIA, "NVIDIA H100 80GB HBM3", 81559),
    (20, GpuVendor.NVIDIA, "NVIDIA A100-SXM4-40GB", 40960),
    (15, GpuVendor.NVIDIA, "NVIDIA L40S", 46068),
    (10, GpuVendor.NVIDIA, "NVIDIA GeForce RTX 4090", 24564),
    (10, GpuVendor.ASCEND, "Ascend 910B3", 65536),
    (5, GpuVendor.AMD, "AMD Instinct MI300X", 196592),
]
LLAMA3_8B = ModelMetadata(
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
LLAMA3_70B = replace(
    LLAMA3_8B,
    num_layers=80,
    num_attention_heads=64,
    hidden_size=8192,
    weight_bytes=141_107_412_992,
    intermediate_size=28672,
)
QWEN_7B_Q4 = replace(LLAMA3_8B, weight_bytes=4_680_000_000, dtype="Q4_K", max_context=32768)
LLAMA3_70B_Q4 = replace(LLAMA3_70B, weight_bytes=42_520_000_000, dtype="Q4_K")


def cluster(workers: int, rng: random.Random) -> list[WorkerSnapshot]:
    weights = [s[0] for s in SHAPES]
    snapshots = []
    for wid in range(workers):
        _, vendor, name, mib = rng.choices(SHAPES, weights)[0]
        gpus = tuple(
            GpuDevice(
                index=i,
                vendor=vendor,
                name=name,
                uuid=f"SIM-{wid}-{i}",
                memory_total=mib * MiB,
                memory_used=0,
                simulated=True,
            )
            for i in range(8)
        )
        labels = {"zone": "abc"[wid % 3], "gpu": name.split()[-1].lower()}
        state = WorkerState.MAINTENANCE if wid % 97 == 5 else WorkerState.READY
        snapshots.append(
            WorkerSnapshot(wid, f"worker-{wid}", state, labels, gpus, ram_total=1024 * GiB)
        )
    return snapshots


def request_mix() -> list[tuple[int, PlacementRequest]]:
    """(weight, request): chat models on vLLM at full and half utilisation, a 70B model
    over several GPUs, GGUF models on llama.cpp, an Ascend-only and a label-bound one."""

    def make(
        name: str, meta: ModelMetadata, engine: str, *flags: str, **extra: object
    ) -> PlacementRequest:
        table = estimate_table(meta, EstimateRequest(engine, tuple(flags)))
        heads = (meta.num_attention_heads, meta.num_kv_heads) if engine != "llama.cpp" else None
        return PlacementRequest(
            name,
            engine,
            table,
            vendors=frozenset(extra.pop("vendors", {"nvidia", "amd"})),  # type: ignore[arg-type]
            num_attention_heads=heads[0] if heads else None,
            num_kv_heads=heads[1] if heads else None,
            **extra,  # type: ignore[arg-type]
        )

    return [
        (20, make("llama3-8b", LLAMA3_8B, "vllm")),
        (20, make("llama3-8b-half", LLAMA3_8B, "vllm", "--gpu-memory-utilization", "0.45")),
        (5, make("llama3-70b", LLAMA3_70B, "vllm")),
        (30, make("qwen-7b-q4", QWEN_7B_Q4, "llama.cpp")),
        (5, make("llama3-70b-q4", LLAMA3_70B_Q4, "llama.cpp")),
        (10, make("llama3-8b-ascend", LLAMA3_8B, "mindie", vendors={"ascend"})),
        (10, make("qwen-zone-a", QWEN_7B_Q4, "llama.cpp", worker_selector={"zone": "a"})),
    ]


def requests(count: int, rng: random.Random, workers: int) -> list[PlacementRequest]:
    mix = request_mix()
    weights = [w for w, _ in mix]
    out = []
    for _ in range(count):
        request = rng.choices(mix, weights)[0][1]
        strategy = rng.choice([Strategy.SPREAD, Strategy.BINPACK])
        preferred = frozenset(rng.sample(range(workers), 2)) if rng.random() < 0.2 else frozenset()
        out.append(replace(request, strategy=strategy, preferred_worker_ids=preferred))
    return out


def fixed_estimate(per_gpu: int) -> MemoryEstimate:
    return MemoryEstimate(
        "llama.cpp", 4096, 1, per_gpu, 0, 0, per_gpu, per_gpu, 0, 0, per_gpu, None, "-"
    )


def percentile(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


def run_index(
    snapshots: list[WorkerSnapshot], reqs: list[PlacementRequest], churn: float, seed: int
) -> tuple[list[float], list[Claim | None], int, CapacityIndex]:
    """Latency (s) and claim of each decision, instances released along the way (a share
    ``churn`` of the decisions), and the capacity index at the end."""
    rng = random.Random(seed)
    capacity = CapacityIndex(snapshots)
    latencies, claims, placed, released = [], [], [], 0
    for n, request in enumerate(reqs):
        start = time.perf_counter()
        result = place(request, capacity)
        if isinstance(result, Placement):
            capacity.reserve(n, result.claim)
        latencies.append(time.perf_counter() - start)
        if isinstance(result, Placement):
            placed.append(n)
            claims.append(result.claim)
        else:
            claims.append(None)
        if placed and rng.random() < churn:
            capacity.release(placed.pop(rng.randrange(len(placed))))
            released += 1
    return latencies, claims, released, capacity


def naive_place(
    request: PlacementRequest, workers: list[WorkerSnapshot], placed: list[Claim]
) -> Claim | None:
    """Same policy (single-worker GPU placements), recomputed from scratch each time."""
    claimed: dict[GpuRef, int] = defaultdict(int)
    for earlier in placed:
        for part in earlier.gpus:
            claimed[part.gpu] += part.bytes
    sign = 1 if request.strategy is Strategy.BINPACK else -1
    for count in sorted(request.estimates):
        est = request.estimates[count]
        need = required_gpu_total(est)
        best: tuple[tuple[object, ...], Claim] | None = None
        for w in workers:
            if w.state is not WorkerState.READY or any(
                w.labels.get(k) != v for k, v in request.worker_selector.items()
            ):
                continue
            free = {
                (g.vendor, g.index): g.memory_total - claimed[GpuRef(w.id, g.vendor, g.index)]
                for g in w.gpus
            }
            total_free = sum(free.values())
            shapes: dict[tuple[GpuVendor, int], list[tuple[int, int]]] = defaultdict(list)
            for g in w.gpus:
                if g.vendor.value in request.vendors and g.memory_total >= need:
                    shapes[(g.vendor, g.memory_total)].append((free[(g.vendor, g.index)], g.index))
            for (vendor, size), gpus in shapes.items():
                claim = claimed_bytes(est, size)
                fit = sorted(x for x in gpus if x[0] >= claim)
                if len(fit) < count:
                    continue
                chosen = fit[:count] if sign == 1 else fit[-count:]
                last = chosen[0][1] if count == 1 else size
                anchor = chosen[0][0] if count == 1 else fit[-count][0]
                key = (anchor - claim, total_free, w.id, vendor.value, last)
                if best is None or (key < best[0] if sign == 1 else key > best[0]):
                    parts = tuple(
                        GpuClaim(GpuRef(w.id, vendor, i), claim)
                        for _, i in sorted(chosen, key=lambda c: c[1])
                    )
                    best = (key, Claim(gpus=parts))
        if best is not None:
            return best[1]
    return None


def run_naive(workers: list[WorkerSnapshot], reqs: list[PlacementRequest]) -> list[Claim | None]:
    claims: list[Claim | None] = []
    placed: list[Claim] = []
    for request in reqs:
        claim = naive_place(request, workers, placed)
        claims.append(claim)
        if claim is not None:
            placed.append(claim)
    return claims


def main() -> None:
    rng = random.Random(7)
    snapshots = cluster(1000, rng)
    reqs = requests(10_000, rng, len(snapshots))
    latencies, claims, released, capacity = run_index(snapshots, reqs, churn=0.05, seed=1)
    placed = sum(c is not None for c in claims)
    total = sum(latencies)
    print("scheduler: 1,000 workers × 8 GPUs, 10,000 placement decisions (place + reserve)")
    print(f"  placed {placed}, unschedulable {len(reqs) - placed}, released on the way {released}")
    print(f"  decisions/s          {len(reqs) / total:,.0f}")
    print(
        f"  latency p50 / p99 / max  {percentile(latencies, 0.5) * 1e3:.3f} / "
        f"{percentile(latencies, 0.99) * 1e3:.3f} / {max(latencies) * 1e3:.3f} ms"
    )
    print(f"  mean {statistics.fmean(latencies) * 1e3:.3f} ms (max includes garbage collection)")
    impossible = replace(reqs[0], estimates={1: fixed_estimate(4096 * GiB)})
    start = time.perf_counter()
    result = place(impossible, capacity)
    elapsed = time.perf_counter() - start
    assert isinstance(result, Unschedulable)
    print(f"  unschedulable answer with a reason for each of 1,000 workers: {elapsed * 1e3:.1f} ms")
    start = time.perf_counter()
    evaluate(reqs[1], capacity)
    print(f"  dry run with every worker explained: {(time.perf_counter() - start) * 1e3:.1f} ms")
    print()
    print("naive rescan-everything baseline, same policy and request sequence:")
    for size, decisions in ((10, 300), (100, 300), (1000, 200)):
        crng = random.Random(size)
        workers = cluster(size, crng)
        seq = [
            replace(r, preferred_worker_ids=frozenset()) for r in requests(decisions, crng, size)
        ]
        index_lat, index_claims, _, _ = run_index(workers, seq, churn=0.0, seed=0)
        start = time.perf_counter()
        naive_claims = run_naive(workers, seq)
        naive_total = time.perf_counter() - start
        same = sum(a == b for a, b in zip(index_claims, naive_claims, strict=True))
        index_rate = len(seq) / sum(index_lat)
        naive_rate = len(seq) / naive_total
        print(
            f"  {size:>5} workers × 8 GPUs, {len(seq)} decisions: index {index_rate:,.0f}/s, "
            f"naive {naive_rate:,.1f}/s, ratio {index_rate / naive_rate:,.1f}×, "
            f"same choice {same}/{len(seq)}"
        )


if __name__ == "__main__":
    main()
