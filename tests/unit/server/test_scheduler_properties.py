"""Properties of placement on random clusters and random request sequences.

The reference below decides the same policy by looking at every worker and GPU; the
index-driven scheduler must pick exactly what it picks.
"""

from __future__ import annotations

from collections import defaultdict

from hypothesis import given, settings
from hypothesis import strategies as st

from maasbase.common.hardware import GpuDevice, GpuVendor
from maasbase.common.workers import WorkerState
from maasbase.server.estimate import (
    MemoryEstimate,
    claimed_bytes,
    required_gpu_total,
    valid_tensor_parallel_sizes,
)
from maasbase.server.scheduler import (
    CapacityIndex,
    GpuRef,
    Placement,
    PlacementRequest,
    Strategy,
    Unschedulable,
    WorkerSnapshot,
    evaluate,
    place,
)

GiB = 1024**3
SHAPES = [
    (GpuVendor.NVIDIA, 16),
    (GpuVendor.NVIDIA, 24),
    (GpuVendor.NVIDIA, 80),
    (GpuVendor.AMD, 64),
]
R = WorkerState.READY


@st.composite
def clusters(draw: st.DrawFn) -> list[WorkerSnapshot]:
    workers = []
    for wid in range(draw(st.integers(1, 6))):
        gpus: list[GpuDevice] = []
        for vendor, size in draw(st.lists(st.sampled_from(SHAPES), max_size=2, unique=True)):
            start = sum(1 for g in gpus if g.vendor == vendor)
            for i in range(start, start + draw(st.integers(1, 4))):
                gpus.append(
                    GpuDevice(
                        index=i,
                        vendor=vendor,
                        name=f"{vendor.value}-{size}",
                        uuid=f"{wid}-{vendor.value}-{i}",
                        memory_total=size * GiB,
                        memory_used=0,
                    )
                )
        reserved = {(g.vendor, g.index): draw(st.sampled_from([0, 0, GiB, 5 * GiB])) for g in gpus}
        workers.append(
            WorkerSnapshot(
                id=wid,
                name=f"w{wid}",
                state=draw(st.sampled_from([R, R, R, WorkerState.MAINTENANCE])),
                labels={"zone": draw(st.sampled_from("ab"))},
                gpus=tuple(gpus),
                ram_total=draw(st.sampled_from([16, 64])) * GiB,
                gpu_reserved=reserved,
            )
        )
    return workers


def estimate(per_gpu: int, count: int, util: float | None) -> MemoryEstimate:
    return MemoryEstimate(
        "vllm" if util else "llama.cpp",
        4096,
        count,
        per_gpu * count,
        0,
        0,
        per_gpu * count,
        per_gpu,
        0,
        0,
        per_gpu,
        util,
        "-",
    )


@st.composite
def requests(draw: st.DrawFn, *, span: bool = False) -> PlacementRequest:
    util = draw(st.sampled_from([None, None, 0.3, 0.5, 0.9]))
    base = draw(st.integers(1, 120)) * GiB // 2
    counts = draw(st.sets(st.sampled_from([1, 2, 4, 8]), min_size=1))
    vendors = draw(st.sets(st.sampled_from(["nvidia", "amd", "cpu"]), min_size=1))
    heads = draw(st.sampled_from([None, 32, 12, 40]))
    return PlacementRequest(
        model="m",
        backend="vllm" if util else "llama.cpp",
        estimates={c: estimate(base // c + GiB // 2, c, util) for c in counts},
        vendors=frozenset(vendors),
        strategy=draw(st.sampled_from(list(Strategy))),
        worker_selector=draw(st.sampled_from([{}, {}, {"zone": "a"}])),
        num_attention_heads=heads,
        num_kv_heads=draw(st.sampled_from([None, 4, 8])) if heads else None,
        cpu_ram_bytes=draw(st.integers(1, 40)) * GiB if "cpu" in vendors else None,
        can_span_workers=span and draw(st.booleans()),
    )


def reference(request: PlacementRequest, capacity: CapacityIndex) -> list[GpuRef] | int | None:
    """GPUs (or the CPU worker id) the policy picks, by exhaustive search."""
    frees = capacity.free_map()
    binpack = request.strategy is Strategy.BINPACK
    workers = [
        w
        for w in capacity.workers()
        if w.state is R and all(w.labels.get(k) == v for k, v in request.worker_selector.items())
    ]
    heads, kv = request.num_attention_heads or 0, request.num_kv_heads
    for count in sorted(request.estimates):
        if count not in valid_tensor_parallel_sizes(heads, count, kv) or not request.gpu_vendors:
            continue
        est = request.estimates[count]
        best: tuple[tuple[object, ...], list[GpuRef]] | None = None
        for w in workers:
            worker_free = sum(frees[GpuRef(w.id, g.vendor, g.index)] for g in w.gpus)
            shapes: dict[tuple[GpuVendor, int], list[tuple[int, int]]] = defaultdict(list)
            for g in w.gpus:
                if g.vendor in request.gpu_vendors and g.memory_total >= required_gpu_total(est):
                    free = frees[GpuRef(w.id, g.vendor, g.index)]
                    shapes[(g.vendor, g.memory_total)].append((free, g.index))
            for (vendor, total), gpus in shapes.items():
                claim = claimed_bytes(est, total)
                fit = sorted(g for g in gpus if g[0] >= claim)
                if len(fit) < count:
                    continue
                chosen = fit[:count] if binpack else fit[-count:]
                last = chosen[0][1] if count == 1 else total
                anchor = chosen[0][0] if count == 1 else fit[-count][0]
                key = (anchor - claim, worker_free, w.id, vendor.value, last)
                if best is None or (key < best[0] if binpack else key > best[0]):
                    best = (key, sorted((GpuRef(w.id, vendor, i) for _, i in chosen), key=_key))
        if best is not None:
            return best[1]
    if request.can_span_workers:
        return None  # spans are checked for validity, not against this reference
    if request.allows_cpu and request.cpu_ram_bytes is not None:
        need = request.cpu_ram_bytes
        options = [
            (capacity.ram_free(w.id) - need, w.id)
            for w in workers
            if not w.gpus and capacity.ram_free(w.id) >= need
        ]
        if options:
            return (min(options) if binpack else max(options))[1]
    return None


def _key(ref: GpuRef) -> tuple[int, str, int]:
    return (ref.worker_id, ref.vendor.value, ref.index)


def check_invariants(capacity: CapacityIndex) -> None:
    claimed: dict[GpuRef, int] = defaultdict(int)
    for claim in capacity.claims().values():
        for part in claim.gpus:
            claimed[part.gpu] += part.bytes
    for w in capacity.workers():
        for g in w.gpus:
            ref = GpuRef(w.id, g.vendor, g.index)
            assert claimed[ref] <= g.memory_total
            reserved = w.gpu_reserved.get((g.vendor, g.index), 0)
            assert capacity.gpu_free(ref) == max(0, g.memory_total - claimed[ref] - reserved)


def check_placement(request: PlacementRequest, capacity: CapacityIndex, p: Placement) -> None:
    """Filters honoured and tensor-parallel sizes valid."""
    for wid in p.worker_ids:
        w = capacity.worker(wid)
        assert w.state is R
        assert all(w.labels.get(k) == v for k, v in request.worker_selector.items())
    if not p.claim.gpus:
        assert p.tp_size == 0
        assert not capacity.worker(p.worker_ids[0]).gpus
        return
    heads, kv = request.num_attention_heads or 0, request.num_kv_heads
    assert p.tp_size in valid_tensor_parallel_sizes(heads, p.tp_size, kv)
    assert p.tp_size * p.pp_size in request.estimates
    assert len(p.claim.gpus) == p.tp_size * p.pp_size
    for wid in p.worker_ids:
        mine = [c for c in p.claim.gpus if c.gpu.worker_id == wid]
        assert len(mine) == p.tp_size
        sizes = {capacity.worker(wid).gpu(c.gpu.vendor, c.gpu.index).memory_total for c in mine}  # type: ignore[union-attr]
        assert len(sizes) == 1  # one GPU model per group
        assert all(c.gpu.vendor in request.gpu_vendors for c in mine)


SCAN_LIMITS = st.sampled_from([0, 64])  # 0: label selectors walk the index too


@settings(max_examples=120, deadline=None)
@given(clusters(), st.lists(requests(), min_size=1, max_size=15), SCAN_LIMITS)
def test_placement_matches_exhaustive_search_and_never_over_allocates(
    workers: list[WorkerSnapshot], reqs: list[PlacementRequest], scan_limit: int
) -> None:
    capacity = CapacityIndex(workers, direct_scan_limit=scan_limit)
    for n, request in enumerate(reqs):
        expected = reference(request, capacity)
        result = place(request, capacity)
        if expected is None:
            assert isinstance(result, Unschedulable)
            assert set(result.reasons) == {w.name for w in workers}
            assert all(result.reasons.values())
            continue
        assert isinstance(result, Placement)
        check_placement(request, capacity, result)
        if isinstance(expected, int):
            assert result.worker_ids == (expected,)
        else:
            assert sorted((c.gpu for c in result.claim.gpus), key=_key) == expected
        if result.tp_size == 1:
            _check_single_gpu_strategy(request, capacity, result)
        capacity.reserve(n, result.claim)  # a placement is always reservable
        check_invariants(capacity)


def _check_single_gpu_strategy(
    request: PlacementRequest, capacity: CapacityIndex, result: Placement
) -> None:
    """binpack: no other fitting GPU would be left with less; spread: none with more."""
    est = result.estimate
    assert est is not None
    chosen = result.claim.gpus[0]
    left = capacity.gpu_free(chosen.gpu) - chosen.bytes
    for w in capacity.workers():
        if w.state is not R or any(
            w.labels.get(k) != v for k, v in request.worker_selector.items()
        ):
            continue
        for g in w.gpus:
            if g.vendor not in request.gpu_vendors or g.memory_total < required_gpu_total(est):
                continue
            ref = GpuRef(w.id, g.vendor, g.index)
            other = capacity.gpu_free(ref) - claimed_bytes(est, g.memory_total)
            if other < 0:
                continue
            assert left <= other if request.strategy is Strategy.BINPACK else left >= other


@settings(max_examples=60, deadline=None)
@given(clusters(), st.lists(requests(span=True), min_size=1, max_size=10), SCAN_LIMITS)
def test_spanning_placements_are_valid_and_reservable(
    workers: list[WorkerSnapshot], reqs: list[PlacementRequest], scan_limit: int
) -> None:
    capacity = CapacityIndex(workers, direct_scan_limit=scan_limit)
    for n, request in enumerate(reqs):
        result = place(request, capacity)
        if isinstance(result, Placement):
            check_placement(request, capacity, result)
            assert len(set(result.worker_ids)) == result.pp_size
            capacity.reserve(n, result.claim)
        check_invariants(capacity)


@settings(max_examples=60, deadline=None)
@given(clusters(), requests(), st.data())
def test_manual_gpu_selection_is_honoured_exactly(
    workers: list[WorkerSnapshot], request: PlacementRequest, data: st.DataObject
) -> None:
    capacity = CapacityIndex(workers)
    all_gpus = [(w, g) for w in workers for g in w.gpus]
    if not all_gpus:
        return
    picked = data.draw(st.lists(st.sampled_from(all_gpus), min_size=1, max_size=6))
    selector = tuple(f"{w.name}:{g.vendor.value}:{g.index}" for w, g in picked)
    selected = {GpuRef(w.id, g.vendor, g.index) for w, g in picked}
    per_replica = data.draw(st.sampled_from(sorted(request.estimates)))
    manual = PlacementRequest(
        model="m",
        backend=request.backend,
        estimates=request.estimates,
        vendors=frozenset({"nvidia", "amd"}),
        strategy=request.strategy,
        gpu_selector=selector,
        gpus_per_replica=per_replica,
    )
    for n in range(4):
        result = place(manual, capacity)
        if isinstance(result, Unschedulable):
            assert set(result.reasons) >= {w.name for w, _ in picked}
            break
        refs = {c.gpu for c in result.claim.gpus}
        assert refs <= selected
        assert len(result.claim.gpus) == len(refs) == per_replica
        capacity.reserve(n, result.claim)
        check_invariants(capacity)


@settings(max_examples=60, deadline=None)
@given(clusters(), st.lists(requests(), min_size=1, max_size=10), st.data())
def test_removing_a_worker_releases_its_claims(
    workers: list[WorkerSnapshot], reqs: list[PlacementRequest], data: st.DataObject
) -> None:
    capacity = CapacityIndex(workers)
    for n, request in enumerate(reqs):
        result = place(request, capacity)
        if isinstance(result, Placement):
            capacity.reserve(n, result.claim)
    gone = data.draw(st.sampled_from(workers))
    touching = {k for k, c in capacity.claims().items() if gone.id in c.worker_ids}

    released = capacity.remove_worker(gone.id)

    assert set(released) == touching
    assert all(gone.id not in c.worker_ids for c in capacity.claims().values())
    check_invariants(capacity)
    result = place(reqs[0], capacity)
    if isinstance(result, Placement):
        assert gone.id not in result.worker_ids


@settings(max_examples=60, deadline=None)
@given(clusters(), st.lists(requests(span=True), min_size=1, max_size=6))
def test_the_dry_run_changes_nothing_and_agrees_with_place(
    workers: list[WorkerSnapshot], reqs: list[PlacementRequest]
) -> None:
    capacity = CapacityIndex(workers)
    for n, request in enumerate(reqs):
        before, claims = capacity.free_map(), capacity.claims()
        dry = evaluate(request, capacity)
        assert capacity.free_map() == before
        assert capacity.claims() == claims
        real = place(request, capacity)
        assert type(dry) is type(real)
        if isinstance(dry, Placement) and isinstance(real, Placement):
            assert dry.claim == real.claim
            assert set(dry.reasons) == {w.name for w in workers} - {
                capacity.worker(wid).name for wid in dry.worker_ids
            }
            capacity.reserve(n, real.claim)
        else:
            assert isinstance(dry, Unschedulable)
            assert isinstance(real, Unschedulable)
            assert dry.reasons == real.reasons
