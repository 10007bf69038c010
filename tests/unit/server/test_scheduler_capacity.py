"""The incremental capacity index: claims, worker changes, and its search structures."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from maasbase.common.errors import Conflict, NotFound
from maasbase.common.hardware import GpuDevice, GpuVendor
from maasbase.common.workers import WorkerState
from maasbase.server.scheduler import (
    CapacityExceeded,
    CapacityIndex,
    Claim,
    DuplicateClaim,
    DuplicateWorker,
    GpuClaim,
    GpuRef,
    RamClaim,
    UnknownClaim,
    UnknownGpu,
    UnknownWorker,
    WorkerSnapshot,
)

GiB = 1024**3
NV = GpuVendor.NVIDIA


def gpu(index: int, gib: int, vendor: GpuVendor = NV, used: int = 0) -> GpuDevice:
    return GpuDevice(
        index=index,
        vendor=vendor,
        name=f"GPU-{gib}G",
        uuid=f"GPU-{vendor.value}-{index}-{gib}",
        memory_total=gib * GiB,
        memory_used=used,
    )


def worker(
    wid: int,
    gpus: list[GpuDevice],
    *,
    state: WorkerState = WorkerState.READY,
    ram: int = 64 * GiB,
    reserved: dict[tuple[GpuVendor, int], int] | None = None,
) -> WorkerSnapshot:
    return WorkerSnapshot(
        wid, f"w{wid}", state, {}, tuple(gpus), ram_total=ram, gpu_reserved=reserved or {}
    )


def claim(*parts: tuple[int, int, int]) -> Claim:
    return Claim(gpus=tuple(GpuClaim(GpuRef(w, NV, i), b) for w, i, b in parts))


def test_reserve_and_release_move_free_memory() -> None:
    capacity = CapacityIndex([worker(1, [gpu(0, 80), gpu(1, 80)])])
    ref = GpuRef(1, NV, 0)

    capacity.reserve("a", claim((1, 0, 30 * GiB)))
    capacity.reserve("b", claim((1, 0, 50 * GiB)))

    assert capacity.gpu_free(ref) == 0
    assert capacity.gpu_claimed(ref) == 80 * GiB
    assert capacity.release("a") == claim((1, 0, 30 * GiB))
    assert capacity.gpu_free(ref) == 30 * GiB
    assert capacity.worker_gpu_free(1) == 110 * GiB


def test_a_claim_beyond_free_memory_raises_and_reserves_nothing() -> None:
    capacity = CapacityIndex([worker(1, [gpu(0, 80)]), worker(2, [gpu(0, 24)])])
    before = capacity.free_map()

    with pytest.raises(CapacityExceeded, match=r"w2 GPU nvidia:0: a claim of 25\.0 GiB") as info:
        capacity.reserve("x", claim((1, 0, 10 * GiB), (2, 0, 25 * GiB)))

    assert isinstance(info.value, Conflict)
    assert capacity.free_map() == before
    assert capacity.claims() == {}


def test_parts_on_the_same_gpu_add_up_before_the_check() -> None:
    capacity = CapacityIndex([worker(1, [gpu(0, 24)])])

    with pytest.raises(CapacityExceeded):
        capacity.reserve("x", claim((1, 0, 12 * GiB), (1, 0, 13 * GiB)))


def test_unknown_targets_and_keys_raise_typed_errors() -> None:
    capacity = CapacityIndex([worker(1, [gpu(0, 24)])])
    capacity.reserve("a", claim((1, 0, GiB)))

    with pytest.raises(UnknownGpu, match=r"worker 'w1' has no nvidia GPU 5"):
        capacity.reserve("b", claim((1, 5, GiB)))
    with pytest.raises(UnknownWorker):
        capacity.reserve("b", claim((9, 0, GiB)))
    with pytest.raises(DuplicateClaim):
        capacity.reserve("a", claim((1, 0, GiB)))
    with pytest.raises(UnknownClaim):
        capacity.release("nope")
    with pytest.raises(DuplicateWorker):
        capacity.add_worker(worker(1, []))
    with pytest.raises(DuplicateWorker, match="name 'w1'"):
        capacity.add_worker(WorkerSnapshot(2, "w1", WorkerState.READY, {}, (), 0))
    assert all(issubclass(e, NotFound) for e in (UnknownGpu, UnknownWorker, UnknownClaim))


def test_free_memory_counts_our_claims_not_the_device_memory_used() -> None:
    """memory_used includes our own instances, so it is not subtracted again."""
    busy = gpu(0, 80, used=70 * GiB)
    capacity = CapacityIndex([worker(1, [busy])])

    assert capacity.gpu_free(GpuRef(1, NV, 0)) == 80 * GiB


def test_memory_reserved_for_foreign_processes_is_not_handed_out() -> None:
    capacity = CapacityIndex([worker(1, [gpu(0, 80)], reserved={(NV, 0): 10 * GiB})])

    assert capacity.gpu_free(GpuRef(1, NV, 0)) == 70 * GiB
    with pytest.raises(CapacityExceeded):
        capacity.reserve("x", claim((1, 0, 71 * GiB)))


def test_ram_claims_use_ram_minus_reserved() -> None:
    snapshot = WorkerSnapshot(1, "cpu", WorkerState.READY, {}, (), 64 * GiB, ram_reserved=8 * GiB)
    capacity = CapacityIndex([snapshot])
    capacity.reserve("a", Claim(ram=(RamClaim(1, 50 * GiB),)))

    assert capacity.ram_free(1) == 6 * GiB
    assert capacity.ram_entries() == [(6 * GiB, 1)]
    with pytest.raises(CapacityExceeded, match="cpu RAM"):
        capacity.reserve("b", Claim(ram=(RamClaim(1, 7 * GiB),)))


def test_removing_a_worker_releases_claims_on_every_worker_they_span() -> None:
    capacity = CapacityIndex([worker(1, [gpu(0, 80)]), worker(2, [gpu(0, 80)])])
    capacity.reserve("span", claim((1, 0, 40 * GiB), (2, 0, 40 * GiB)))
    capacity.reserve("local", claim((2, 0, 10 * GiB)))

    assert capacity.remove_worker(1) == ("span",)
    assert capacity.gpu_free(GpuRef(2, NV, 0)) == 70 * GiB
    assert set(capacity.claims()) == {"local"}
    assert 1 not in capacity
    assert capacity.worker_id("w1") is None


def test_updating_a_worker_keeps_claims_that_still_fit_and_evicts_the_rest() -> None:
    capacity = CapacityIndex([worker(1, [gpu(0, 80), gpu(1, 80)]), worker(2, [gpu(0, 80)])])
    capacity.reserve("old", claim((1, 0, 30 * GiB)))
    capacity.reserve("new", claim((1, 0, 30 * GiB)))
    capacity.reserve("gone", claim((1, 1, 10 * GiB), (2, 0, 10 * GiB)))

    # GPU 0 shrinks to 40 GiB (room for one claim) and GPU 1 disappears.
    evicted = capacity.update_worker(worker(1, [gpu(0, 40)]))

    assert evicted == ("new", "gone")
    assert set(capacity.claims()) == {"old"}
    assert capacity.gpu_free(GpuRef(1, NV, 0)) == 10 * GiB
    assert capacity.gpu_free(GpuRef(2, NV, 0)) == 80 * GiB


def test_more_foreign_memory_never_evicts_a_claim_and_free_stays_at_zero() -> None:
    capacity = CapacityIndex([worker(1, [gpu(0, 80)])])
    capacity.reserve("a", claim((1, 0, 60 * GiB)))

    evicted = capacity.update_worker(worker(1, [gpu(0, 80)], reserved={(NV, 0): 30 * GiB}))

    assert evicted == ()
    assert capacity.gpu_free(GpuRef(1, NV, 0)) == 0


def test_only_ready_workers_are_searchable_but_all_claims_count() -> None:
    capacity = CapacityIndex([worker(1, [gpu(0, 80)], state=WorkerState.MAINTENANCE)])
    capacity.reserve("a", claim((1, 0, 20 * GiB)))
    shape = (NV, 80 * GiB)

    assert capacity.gpu_entries(shape) == []
    assert capacity.best_gpu(NV, GiB) is None

    capacity.update_worker(worker(1, [gpu(0, 80)]))

    assert capacity.gpu_entries(shape) == [(60 * GiB, 60 * GiB, 1, 0)]
    assert capacity.best_gpu(NV, GiB) == GpuRef(1, NV, 0)


def test_best_gpu_finds_the_tightest_or_the_freest_fit() -> None:
    capacity = CapacityIndex(
        [worker(1, [gpu(0, 80), gpu(1, 24)]), worker(2, [gpu(0, 40)]), worker(3, [gpu(0, 16)])]
    )
    capacity.reserve("a", claim((1, 0, 50 * GiB)))  # leaves 30 GiB

    assert capacity.best_gpu(NV, 20 * GiB) == GpuRef(1, NV, 1)  # 24 GiB free
    assert capacity.best_gpu(NV, 25 * GiB) == GpuRef(1, NV, 0)  # 30 GiB free
    assert capacity.best_gpu(NV, 20 * GiB, largest=True) == GpuRef(2, NV, 0)
    assert capacity.best_gpu(NV, 20 * GiB, allowed=lambda w: w != 1) == GpuRef(2, NV, 0)
    assert capacity.best_gpu(NV, 41 * GiB) is None
    assert capacity.best_gpu(GpuVendor.AMD, 0) is None


# -- properties ----------------------------------------------------------------------------

SIZES = [16, 24, 40, 80]


@st.composite
def clusters(draw: st.DrawFn) -> list[WorkerSnapshot]:
    snapshots = []
    for wid in range(draw(st.integers(1, 5))):
        sizes = draw(st.lists(st.sampled_from(SIZES), max_size=4))
        gpus = [gpu(i, size) for i, size in enumerate(sizes)]
        reserved = {(NV, i): draw(st.integers(0, 4)) * GiB for i in range(len(gpus))}
        state = draw(st.sampled_from([WorkerState.READY, WorkerState.READY, WorkerState.NOT_READY]))
        snapshots.append(worker(wid, gpus, state=state, reserved=reserved, ram=32 * GiB))
    return snapshots


def _expected_entries(capacity: CapacityIndex) -> set[tuple[int, ...]]:
    """The GPU search entries, recomputed from scratch."""
    frees = capacity.free_map()
    entries = set()
    for w in capacity.workers():
        if w.state is not WorkerState.READY:
            continue
        total = sum(free for ref, free in frees.items() if ref.worker_id == w.id)
        for g in w.gpus:
            entries.add((frees[GpuRef(w.id, g.vendor, g.index)], total, w.id, g.index))
    return entries


def _check_invariants(capacity: CapacityIndex) -> None:
    claimed: dict[GpuRef, int] = {}
    for c in capacity.claims().values():
        for part in c.gpus:
            claimed[part.gpu] = claimed.get(part.gpu, 0) + part.bytes
    for w in capacity.workers():
        for g in w.gpus:
            ref = GpuRef(w.id, g.vendor, g.index)
            assert claimed.get(ref, 0) <= g.memory_total
            assert capacity.gpu_claimed(ref) == claimed.get(ref, 0)
            reserved = w.gpu_reserved.get((g.vendor, g.index), 0)
            expected = max(0, g.memory_total - claimed.get(ref, 0) - reserved)
            assert capacity.gpu_free(ref) == expected >= 0
    found = set()
    for shape in capacity.shapes():
        entries = list(capacity.gpu_entries(shape))
        assert entries == sorted(entries)
        found.update(entries)
    assert found == _expected_entries(capacity)
    for shape in capacity.shapes():
        for count in range(1, 5):
            entries = list(capacity.worker_entries(shape, count))
            assert entries == sorted(entries)
            for kth, _, wid in entries:
                frees = sorted((f for f, _ in capacity.shape_gpus(wid, shape)), reverse=True)
                assert frees[count - 1] == kth


@settings(max_examples=60, deadline=None)
@given(clusters(), st.data())
def test_random_operations_never_over_allocate_and_keep_the_index_exact(
    snapshots: list[WorkerSnapshot], data: st.DataObject
) -> None:
    capacity = CapacityIndex(snapshots)
    next_key = 0
    for _ in range(data.draw(st.integers(1, 25))):
        op = data.draw(st.sampled_from(["reserve", "reserve", "release", "update", "remove"]))
        workers = capacity.workers()
        if op == "reserve" and workers:
            w = data.draw(st.sampled_from(workers))
            if not w.gpus:
                continue
            picked = data.draw(st.lists(st.sampled_from(w.gpus), min_size=1, max_size=3))
            parts = [(w.id, g.index, data.draw(st.integers(0, 30)) * GiB) for g in picked]
            before = capacity.free_map()
            try:
                capacity.reserve(next_key, claim(*parts))
            except CapacityExceeded:
                assert capacity.free_map() == before
            next_key += 1
        elif op == "release" and capacity.claims():
            capacity.release(data.draw(st.sampled_from(sorted(capacity.claims(), key=str))))
        elif op == "update" and workers:
            w = data.draw(st.sampled_from(workers))
            sizes = data.draw(st.lists(st.sampled_from(SIZES), max_size=4))
            state = data.draw(st.sampled_from(list(WorkerState)))
            evicted = capacity.update_worker(
                worker(w.id, [gpu(i, s) for i, s in enumerate(sizes)], state=state)
            )
            assert not set(evicted) & set(capacity.claims())
        elif op == "remove" and workers:
            w = data.draw(st.sampled_from(workers))
            released = capacity.remove_worker(w.id)
            assert all(w.id not in c.worker_ids for c in capacity.claims().values())
            assert not set(released) & set(capacity.claims())
        _check_invariants(capacity)
