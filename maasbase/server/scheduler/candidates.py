"""Candidates: the ways one instance could run, found through the capacity index.

Three kinds, tried in this order by :func:`.place.place`:

- ``count`` GPUs of one shape (vendor and memory size) on one worker — a single GPU or a
  tensor-parallel group. Engines size every rank like the smallest, so a group never
  mixes GPU models;
- ``per_worker`` GPUs of one shape on each of several workers (tensor parallel inside a
  worker, pipeline parallel across them), for backends that can span workers;
- RAM on a worker without GPUs, for backends that can run on the CPU.

Each search has two paths with the same result: the index walk (few entries visited)
and a direct scan of given workers, used when a label selector leaves only a few of them
(``CapacityIndex.direct_scan_limit``) and for the workers that hold the model files.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from maasbase.common.hardware import GpuVendor
from maasbase.common.workers import WorkerState
from maasbase.server.estimate import MemoryEstimate, claimed_bytes, required_gpu_total

from .capacity import CapacityIndex, walk
from .scorers import Candidate, best, better, choose
from .types import GpuRef, Shape, Strategy, WorkerSnapshot


def shape_claims(
    shapes: Iterable[Shape], estimate: MemoryEstimate, vendors: frozenset[GpuVendor]
) -> dict[Shape, int]:
    """Bytes the engine claims on one GPU of each shape it fits (``claimed_bytes``)."""
    need = required_gpu_total(estimate)
    return {
        shape: claimed_bytes(estimate, shape[1])
        for shape in shapes
        if shape[0] in vendors and shape[1] >= need
    }


def ready_ids(capacity: CapacityIndex, ids: Iterable[int]) -> list[int]:
    return sorted(
        wid for wid in ids if wid in capacity and capacity.worker(wid).state is WorkerState.READY
    )


def _group(
    capacity: CapacityIndex,
    wid: int,
    shape: Shape,
    claim: int,
    count: int,
    strategy: Strategy,
    estimate: MemoryEstimate,
    worker_free: int,
) -> Candidate | None:
    """``count`` GPUs of ``shape`` on worker ``wid`` with ``claim`` bytes free each."""
    fitting = [(free, index) for free, index in capacity.shape_gpus(wid, shape) if free >= claim]
    if len(fitting) < count:
        return None
    chosen = sorted(choose(fitting, count, strategy), key=lambda g: g[1])
    vendor, size = shape
    if count == 1:
        key = (chosen[0][0] - claim, worker_free, wid, vendor.value, chosen[0][1])
    else:
        key = (fitting[-count][0] - claim, worker_free, wid, vendor.value, size)
    return Candidate(
        key=key,
        worker_ids=(wid,),
        gpus=tuple((GpuRef(wid, vendor, index), claim) for _, index in chosen),
        ram_bytes=0,
        tp_size=count,
        pp_size=1,
        estimate=estimate,
        free_after=sum(free - claim for free, _ in chosen),
        capacity_total=size * count,
    )


def on_worker(
    capacity: CapacityIndex,
    wid: int,
    estimate: MemoryEstimate,
    count: int,
    claims: dict[Shape, int],
    strategy: Strategy,
) -> Candidate | None:
    """The best ``count``-GPU group on one worker, found by looking at all its GPUs."""
    worker_free = capacity.worker_gpu_free(wid)
    found = [
        _group(capacity, wid, shape, claims[shape], count, strategy, estimate, worker_free)
        for shape in capacity.shape_frees(wid)
        if shape in claims
    ]
    return best(found, strategy)


def single_worker(
    capacity: CapacityIndex,
    estimate: MemoryEstimate,
    count: int,
    claims: dict[Shape, int],
    strategy: Strategy,
    allowed: frozenset[int] | None,
) -> Candidate | None:
    """The best ``count``-GPU group on any ready worker in ``allowed`` (None: all)."""
    if allowed is not None and len(allowed) <= capacity.direct_scan_limit:
        return scan(capacity, ready_ids(capacity, allowed), estimate, count, claims, strategy)
    largest = strategy is Strategy.SPREAD
    best_key: tuple[object, ...] | None = None
    found: tuple[Shape, int, int, int] | None = None
    for shape, claim in claims.items():
        if count == 1:
            entries: Sequence[tuple[int, ...]] = capacity.gpu_entries(shape)
        else:
            entries = capacity.worker_entries(shape, count)
        for entry in walk(entries, claim, largest=largest):
            wid = entry[2]
            if allowed is not None and wid not in allowed:
                continue
            last = entry[3] if count == 1 else shape[1]
            key = (entry[0] - claim, entry[1], wid, shape[0].value, last)
            if better(key, best_key, strategy):
                best_key, found = key, (shape, claim, wid, entry[1])
            break
    if found is None:
        return None
    shape, claim, wid, worker_free = found
    return _group(capacity, wid, shape, claim, count, strategy, estimate, worker_free)


def scan(
    capacity: CapacityIndex,
    workers: Iterable[int],
    estimate: MemoryEstimate,
    count: int,
    claims: dict[Shape, int],
    strategy: Strategy,
) -> Candidate | None:
    """The best ``count``-GPU group on the given (ready) workers, by direct scan."""
    return best(
        [on_worker(capacity, w, estimate, count, claims, strategy) for w in workers], strategy
    )


def spanning(
    capacity: CapacityIndex,
    estimate: MemoryEstimate,
    per_worker: int,
    workers: int,
    claims: dict[Shape, int],
    strategy: Strategy,
    allowed: frozenset[int] | None,
) -> Candidate | None:
    """``per_worker`` GPUs of one shape on each of ``workers`` distinct workers."""
    largest = strategy is Strategy.SPREAD
    best_key: tuple[object, ...] | None = None
    found: tuple[Shape, int, list[tuple[int, int, int]]] | None = None
    direct = allowed is not None and len(allowed) <= capacity.direct_scan_limit
    for shape, claim in claims.items():
        if direct and allowed is not None:
            entries: Sequence[tuple[int, int, int]] = _worker_entries(
                capacity, ready_ids(capacity, allowed), shape, per_worker
            )
        else:
            entries = capacity.worker_entries(shape, per_worker)
        picked: list[tuple[int, int, int]] = []
        for entry in walk(entries, claim, largest=largest):
            if allowed is None or entry[2] in allowed:
                picked.append(entry)
                if len(picked) == workers:
                    break
        if len(picked) < workers:
            continue
        key = (sum(e[0] - claim for e in picked), shape[0].value, shape[1])
        if better(key, best_key, strategy):
            best_key, found = key, (shape, claim, picked)
    if found is None or best_key is None:
        return None
    shape, claim, picked = found
    groups = [
        _group(capacity, wid, shape, claim, per_worker, strategy, estimate, free)
        for _, free, wid in picked
    ]
    return combine([g for g in groups if g is not None], best_key)


def _worker_entries(
    capacity: CapacityIndex, wids: Iterable[int], shape: Shape, count: int
) -> list[tuple[int, int, int]]:
    """What :meth:`CapacityIndex.worker_entries` holds, for the given workers only."""
    entries = []
    for wid in wids:
        frees = sorted((free for free, _ in capacity.shape_gpus(wid, shape)), reverse=True)
        if len(frees) >= count:
            entries.append((frees[count - 1], capacity.worker_gpu_free(wid), wid))
    return sorted(entries)


def cpu(
    capacity: CapacityIndex,
    need: int,
    strategy: Strategy,
    allowed: frozenset[int] | None,
    workers: Iterable[int] | None = None,
) -> Candidate | None:
    """RAM on a ready worker without GPUs: from the index, or among ``workers``."""
    if workers is None and allowed is not None and len(allowed) <= capacity.direct_scan_limit:
        workers = ready_ids(capacity, allowed)
    if workers is None:
        entries: Sequence[tuple[int, int]] = capacity.ram_entries()
    else:
        entries = sorted((capacity.ram_free(w), w) for w in workers if not capacity.worker(w).gpus)
    for free, wid in walk(entries, need, largest=strategy is Strategy.SPREAD):
        if allowed is not None and wid not in allowed:
            continue
        snapshot = capacity.worker(wid)
        return Candidate(
            key=(free - need, wid),
            worker_ids=(wid,),
            gpus=(),
            ram_bytes=need,
            tp_size=0,
            pp_size=1,
            estimate=None,
            free_after=free - need,
            capacity_total=max(snapshot.ram_total - snapshot.ram_reserved, 0),
        )
    return None


def manual_on_worker(
    capacity: CapacityIndex,
    worker: WorkerSnapshot,
    pool: Sequence[tuple[GpuVendor, int]],
    estimate: MemoryEstimate,
    count: int,
    strategy: Strategy,
) -> Candidate | None:
    """``count`` of the GPUs named in ``gpu_selector`` on one worker (any mix of models)."""
    need = required_gpu_total(estimate)
    frees = capacity.gpu_frees(worker.id)
    fitting = []
    for vendor, index in pool:
        device = worker.gpu(vendor, index)
        if device is None or device.memory_total < need:
            continue
        claim = claimed_bytes(estimate, device.memory_total)
        free = frees[(vendor, index)]
        if free >= claim:
            fitting.append((free - claim, vendor.value, index, claim, device.memory_total))
    if len(fitting) < count:
        return None
    fitting.sort()
    chosen = sorted(choose(fitting, count, strategy), key=lambda g: (g[1], g[2]))
    return Candidate(
        key=(fitting[-count][0], capacity.worker_gpu_free(worker.id), worker.id),
        worker_ids=(worker.id,),
        gpus=tuple((GpuRef(worker.id, GpuVendor(v), i), claim) for _, v, i, claim, _ in chosen),
        ram_bytes=0,
        tp_size=count,
        pp_size=1,
        estimate=estimate,
        free_after=sum(left for left, *_ in chosen),
        capacity_total=sum(size for *_, size in chosen),
    )


def combine(parts: Sequence[Candidate], key: tuple[object, ...]) -> Candidate:
    """One candidate spanning the workers of ``parts`` (one group each)."""
    return Candidate(
        key=key,
        worker_ids=tuple(p.worker_ids[0] for p in parts),
        gpus=tuple(gpu for p in parts for gpu in p.gpus),
        ram_bytes=0,
        tp_size=parts[0].tp_size,
        pp_size=len(parts),
        estimate=parts[0].estimate,
        free_after=sum(p.free_after for p in parts),
        capacity_total=sum(p.capacity_total for p in parts),
    )
