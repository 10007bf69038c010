"""Incremental index of free GPU memory and RAM, updated per claim instead of rescanned.

Free memory of a GPU = total − our instances' claims on it − ``gpu_reserved`` (held by
processes we do not manage), never below zero. The device's ``memory_used`` is not used:
it includes our own instances, which their claims already count, and lags behind the
reservations made since the last heartbeat. Claims on a GPU never add up to more than its
total, and a reservation never takes more than its free memory (:class:`CapacityExceeded`
otherwise, and nothing is reserved); RAM claims likewise against ``ram_total − ram_reserved``.

Only ``ready`` workers are searchable (claims on the others still count), through lists
kept sorted with :mod:`bisect`:

- per GPU shape (vendor, memory size): ``(free, worker free total, worker id, index)``
  per GPU — the tightest GPU with ≥ X free is one bisect away, the freest is the last;
- per shape and count k: ``(k-th largest free of the worker's GPUs of that shape, worker
  free total, worker id)`` — workers with k GPUs of ≥ X free each;
- ``(free RAM, worker id)`` for workers without GPUs.

A lookup costs O(log n) plus the entries a filter skips; a reservation re-indexes the
workers it touches, O(g log n) comparisons and g list memmoves for g GPUs per worker.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from maasbase.common.hardware import GpuVendor
from maasbase.common.workers import WorkerState

from .types import (
    CapacityExceeded,
    Claim,
    DuplicateClaim,
    DuplicateWorker,
    GpuKey,
    GpuRef,
    InstanceKey,
    Shape,
    UnknownClaim,
    UnknownGpu,
    UnknownWorker,
    WorkerSnapshot,
    gib,
)

GpuEntry = tuple[int, int, int, int]  # free, worker free total, worker id, index
WorkerEntry = tuple[int, int, int]  # k-th largest free, worker free total, worker id
RamEntry = tuple[int, int]  # free RAM, worker id
T = TypeVar("T")


@dataclass(slots=True)
class _Gpu:
    vendor: GpuVendor
    index: int
    total: int
    reserved: int
    claimed: int = 0
    free: int = 0  # kept equal to max(0, total − claimed − reserved)

    def __post_init__(self) -> None:
        self.add(0)

    def add(self, amount: int) -> None:
        self.claimed += amount
        self.free = max(0, self.total - self.claimed - self.reserved)


@dataclass(slots=True)
class _Worker:
    snapshot: WorkerSnapshot
    gpus: dict[GpuKey, _Gpu]
    shapes: dict[Shape, list[_Gpu]]
    ram_claimed: int = 0
    claim_keys: dict[InstanceKey, None] = field(default_factory=dict)
    entries: list[tuple[list[Any], tuple[int, ...]]] = field(default_factory=list)

    @property
    def ram_free(self) -> int:
        s = self.snapshot
        return max(0, s.ram_total - s.ram_reserved - self.ram_claimed)


def _build(snapshot: WorkerSnapshot) -> _Worker:
    gpus: dict[GpuKey, _Gpu] = {}
    shapes: dict[Shape, list[_Gpu]] = {}
    for device in sorted(snapshot.gpus, key=lambda d: (d.vendor.value, d.index)):
        reserved = snapshot.gpu_reserved.get((device.vendor, device.index), 0)
        gpu = _Gpu(device.vendor, device.index, device.memory_total, reserved)
        gpus[(device.vendor, device.index)] = gpu
        shapes.setdefault((device.vendor, device.memory_total), []).append(gpu)
    return _Worker(snapshot, gpus, shapes)


class CapacityIndex:
    """Free capacity of the cluster, kept current one claim at a time."""

    def __init__(
        self, workers: Iterable[WorkerSnapshot] = (), *, direct_scan_limit: int = 64
    ) -> None:
        # A label selector matching at most this many workers is answered by looking at
        # those workers directly rather than walking the index past all the others.
        self.direct_scan_limit = direct_scan_limit
        self._workers: dict[int, _Worker] = {}
        self._by_name: dict[str, int] = {}
        self._claims: dict[InstanceKey, Claim] = {}
        self._gpu_lists: dict[Shape, list[GpuEntry]] = {}
        self._worker_lists: dict[tuple[Shape, int], list[WorkerEntry]] = {}
        self._ram_list: list[RamEntry] = []
        self._memo: dict[object, object] = {}
        for snapshot in workers:
            self.add_worker(snapshot)

    # -- workers -------------------------------------------------------------------------

    def add_worker(self, snapshot: WorkerSnapshot) -> None:
        if snapshot.id in self._workers:
            raise DuplicateWorker(f"worker {snapshot.id} is already in the index")
        self._index(self._put(snapshot))

    def update_worker(self, snapshot: WorkerSnapshot) -> tuple[InstanceKey, ...]:
        """Replace a worker's snapshot (state, labels, GPUs) and keep its claims.

        Claims are carried over oldest first; one that no longer fits — its GPU is gone or
        now smaller than the claims on it — is released on every worker it spans, and its
        key returned so that the caller can reschedule the instance. Growth of
        ``gpu_reserved`` or ``ram_reserved`` never evicts a claim: it only leaves less to
        hand out.
        """
        old = self._get(snapshot.id)
        new = self._put(snapshot)
        self._unindex(old)
        evicted: list[InstanceKey] = []
        for key in old.claim_keys:
            claim = self._claims[key]
            if self._problem(claim, only=new, ignore_reserved=True) is None:
                self._apply(claim, +1, only=snapshot.id)
                new.claim_keys[key] = None
            else:
                evicted.append(key)
        self._index(new)
        for key in evicted:
            self._change(key, self._claims.pop(key), -1, skip=snapshot.id)
        return tuple(evicted)

    def remove_worker(self, worker_id: int) -> tuple[InstanceKey, ...]:
        """Drop a worker and release every claim that touches it (on all its workers)."""
        worker = self._get(worker_id)
        released = tuple(worker.claim_keys)
        for key in released:
            self.release(key)
        self._unindex(worker)
        del self._workers[worker_id]
        del self._by_name[worker.snapshot.name]
        self._memo.clear()
        return released

    # -- claims --------------------------------------------------------------------------

    def reserve(self, key: InstanceKey, claim: Claim) -> None:
        """Take ``claim`` for instance ``key``; all or nothing."""
        if key in self._claims:
            raise DuplicateClaim(f"instance {key!r} already holds a claim; release it first")
        problem = self._problem(claim)
        if problem is not None:
            raise CapacityExceeded(problem + "; nothing was reserved: schedule the instance again")
        self._claims[key] = claim
        self._change(key, claim, +1)

    def release(self, key: InstanceKey) -> Claim:
        claim = self._claims.pop(key, None)
        if claim is None:
            raise UnknownClaim(f"instance {key!r} holds no claim")
        self._change(key, claim, -1)
        return claim

    def claims(self) -> Mapping[InstanceKey, Claim]:
        return dict(self._claims)

    # -- reads ---------------------------------------------------------------------------

    def __contains__(self, worker_id: object) -> bool:
        return worker_id in self._workers

    def workers(self) -> list[WorkerSnapshot]:
        return [w.snapshot for w in self._workers.values()]

    def worker(self, worker_id: int) -> WorkerSnapshot:
        return self._get(worker_id).snapshot

    def worker_id(self, name: str) -> int | None:
        return self._by_name.get(name)

    def gpu_free(self, ref: GpuRef) -> int:
        return self._gpu(ref).free

    def gpu_claimed(self, ref: GpuRef) -> int:
        return self._gpu(ref).claimed

    def gpu_frees(self, worker_id: int) -> dict[GpuKey, int]:
        return {key: gpu.free for key, gpu in self._get(worker_id).gpus.items()}

    def shape_frees(self, worker_id: int) -> dict[Shape, list[int]]:
        """Free bytes of the worker's GPUs, grouped by shape, in index order."""
        return {s: [g.free for g in gpus] for s, gpus in self._get(worker_id).shapes.items()}

    def shape_gpus(self, worker_id: int, shape: Shape) -> list[tuple[int, int]]:
        """``(free, index)`` of the worker's GPUs of one shape, ascending."""
        gpus = self._get(worker_id).shapes.get(shape, ())
        return sorted((g.free, g.index) for g in gpus)

    def worker_gpu_free(self, worker_id: int) -> int:
        return sum(g.free for g in self._get(worker_id).gpus.values())

    def ram_free(self, worker_id: int) -> int:
        return self._get(worker_id).ram_free

    def free_map(self) -> dict[GpuRef, int]:
        workers = self._workers.items()
        return {GpuRef(i, g.vendor, g.index): g.free for i, w in workers for g in w.gpus.values()}

    # -- search index --------------------------------------------------------------------

    def shapes(self) -> list[Shape]:
        """GPU shapes present on ready workers, in a fixed order."""
        shapes = (s for s, entries in self._gpu_lists.items() if entries)
        return sorted(shapes, key=lambda s: (s[0].value, s[1]))

    def gpu_entries(self, shape: Shape) -> Sequence[GpuEntry]:
        """Ready GPUs of one shape, ascending by free memory. Read-only."""
        return self._gpu_lists.get(shape, [])

    def worker_entries(self, shape: Shape, count: int) -> Sequence[WorkerEntry]:
        """Ready workers with ``count`` GPUs of one shape, ascending by the
        ``count``-th largest free memory among them. Read-only."""
        return self._worker_lists.get((shape, count), [])

    def ram_entries(self) -> Sequence[RamEntry]:
        """Ready workers without GPUs, ascending by free RAM. Read-only."""
        return self._ram_list

    def best_gpu(
        self,
        vendor: GpuVendor,
        min_free: int,
        *,
        largest: bool = False,
        allowed: Callable[[int], bool] | None = None,
    ) -> GpuRef | None:
        """The tightest (or, with ``largest``, the freest) ready GPU of ``vendor`` with at
        least ``min_free`` bytes free on a worker ``allowed`` accepts."""
        best: GpuEntry | None = None
        for shape in self.shapes():
            if shape[0] != vendor:
                continue
            for entry in walk(self.gpu_entries(shape), min_free, largest=largest):
                if allowed is None or allowed(entry[2]):
                    if best is None or (entry > best if largest else entry < best):
                        best = entry
                    break
        return None if best is None else GpuRef(best[2], vendor, best[3])

    def memo(self, key: object, compute: Callable[[], T]) -> T:
        """A value derived from the workers' snapshots, cached until one of them changes."""
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]  # type: ignore[return-value]

    # -- internals -----------------------------------------------------------------------

    def _put(self, snapshot: WorkerSnapshot) -> _Worker:
        holder = self._by_name.get(snapshot.name)
        if holder is not None and holder != snapshot.id:
            raise DuplicateWorker(f"worker name {snapshot.name!r} is taken by worker {holder}")
        old = self._workers.get(snapshot.id)
        if old is not None:
            del self._by_name[old.snapshot.name]
        self._workers[snapshot.id] = worker = _build(snapshot)
        self._by_name[snapshot.name] = snapshot.id
        self._memo.clear()
        return worker

    def _get(self, worker_id: int) -> _Worker:
        worker = self._workers.get(worker_id)
        if worker is None:
            raise UnknownWorker(f"worker {worker_id} is not in the capacity index")
        return worker

    def _gpu(self, ref: GpuRef) -> _Gpu:
        gpu = self._get(ref.worker_id).gpus.get((ref.vendor, ref.index))
        if gpu is None:
            name = self._workers[ref.worker_id].snapshot.name
            raise UnknownGpu(f"worker {name!r} has no {ref.vendor.value} GPU {ref.index}")
        return gpu

    def _problem(
        self, claim: Claim, *, only: _Worker | None = None, ignore_reserved: bool = False
    ) -> str | None:
        """Why ``claim`` (or its part on worker ``only``) does not fit now; None if it does.

        Raises :class:`UnknownWorker` / :class:`UnknownGpu` for a missing target unless
        ``only`` is given (a GPU gone from an updated worker is then just a problem).
        """
        gpu_need: dict[GpuRef, int] = defaultdict(int)
        for part in claim.gpus:
            gpu_need[part.gpu] += part.bytes
        ram_need: dict[int, int] = defaultdict(int)
        for ram_part in claim.ram:
            ram_need[ram_part.worker_id] += ram_part.bytes
        for ref, amount in gpu_need.items():
            if only is not None and ref.worker_id != only.snapshot.id:
                continue
            worker = only or self._get(ref.worker_id)
            gpu = worker.gpus.get((ref.vendor, ref.index))
            if gpu is None:
                if only is None:
                    self._gpu(ref)  # raises UnknownGpu
                return f"{worker.snapshot.name} has no GPU {ref}"
            room = gpu.total - gpu.claimed - (0 if ignore_reserved else gpu.reserved)
            if not 0 <= amount <= room:
                name = worker.snapshot.name
                return f"{name} GPU {ref}: a claim of {gib(amount)} with {gib(max(room, 0))} free"
        for wid, amount in ram_need.items():
            if only is not None and wid != only.snapshot.id:
                continue
            worker = only or self._get(wid)
            s = worker.snapshot
            room = s.ram_total - worker.ram_claimed - (0 if ignore_reserved else s.ram_reserved)
            if not 0 <= amount <= room:
                return f"{s.name} RAM: a claim of {gib(amount)} with {gib(max(room, 0))} free"
        return None

    def _apply(self, claim: Claim, sign: int, *, only: int) -> None:
        worker = self._workers[only]
        for part in claim.gpus:
            if part.gpu.worker_id == only:
                worker.gpus[(part.gpu.vendor, part.gpu.index)].add(sign * part.bytes)
        for ram_part in claim.ram:
            if ram_part.worker_id == only:
                worker.ram_claimed += sign * ram_part.bytes

    def _change(self, key: InstanceKey, claim: Claim, sign: int, *, skip: int = -1) -> None:
        """Add (+1) or remove (-1) a claim on each worker it spans, except ``skip``."""
        for wid in claim.worker_ids:
            if wid == skip:
                continue
            worker = self._workers[wid]
            self._unindex(worker)
            self._apply(claim, sign, only=wid)
            if sign > 0:
                worker.claim_keys[key] = None
            else:
                worker.claim_keys.pop(key, None)
            self._index(worker)

    def _unindex(self, worker: _Worker) -> None:
        for entries, entry in worker.entries:
            del entries[bisect_left(entries, entry)]
        worker.entries = []

    def _index(self, worker: _Worker) -> None:
        if worker.snapshot.state is not WorkerState.READY:
            return
        wid, added = worker.snapshot.id, worker.entries
        if not worker.gpus:
            ram_entry = (worker.ram_free, wid)
            insort(self._ram_list, ram_entry)
            added.append((self._ram_list, ram_entry))
            return
        total = sum(g.free for g in worker.gpus.values())
        for shape, gpus in worker.shapes.items():
            gpu_list = self._gpu_lists.setdefault(shape, [])
            for gpu in gpus:
                gpu_entry = (gpu.free, total, wid, gpu.index)
                insort(gpu_list, gpu_entry)
                added.append((gpu_list, gpu_entry))
            frees = sorted((g.free for g in gpus), reverse=True)
            for count, free in enumerate(frees, start=1):
                worker_list = self._worker_lists.setdefault((shape, count), [])
                worker_entry = (free, total, wid)
                insort(worker_list, worker_entry)
                added.append((worker_list, worker_entry))


def walk(entries: Sequence[tuple[int, ...]], min_first: int, *, largest: bool) -> Iterator[Any]:
    """Entries whose first field is ≥ ``min_first``: tightest first, or freest first."""
    start = bisect_left(entries, (min_first,))
    if largest:
        for i in range(len(entries) - 1, start - 1, -1):
            yield entries[i]
    else:
        for i in range(start, len(entries)):
            yield entries[i]
