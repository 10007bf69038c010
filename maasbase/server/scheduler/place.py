"""The placement decision: filters → candidates → scorers → a placement or the reasons.

:func:`place` is a pure function of the request and the capacity index: it reserves
nothing. The caller reserves ``placement.claim`` (``capacity.reserve(key, claim)``) when it
creates the instance; :func:`evaluate` (the dry run behind ``POST
/api/v1/model-evaluations``) is the same call with every worker explained.

Order of preference: the fewest GPUs that fit (GPU counts from ``request.estimates``,
ascending); at one count, a worker that already holds the model files; then the
strategy (see :mod:`.scorers`). Several workers together come after every single-worker
option, and the CPU of a worker without GPUs after every GPU option.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from maasbase.common.hardware import GpuVendor

from . import candidates as find
from .capacity import CapacityIndex
from .filters import (
    SelectedGpu,
    allowed_workers,
    capacity_reason,
    labels_reason,
    parse_gpu_selector,
    selected_on,
    selection_reason,
    state_reason,
    valid_tp_sizes,
    vendor_reason,
)
from .scorers import Candidate, best, describe, score
from .types import (
    Claim,
    GpuClaim,
    Placement,
    PlacementRequest,
    RamClaim,
    Strategy,
    Unschedulable,
    WorkerSnapshot,
    gib,
)

_NOT_READY = ("not ready", "unreachable", "in maintenance")


def place(
    request: PlacementRequest, capacity: CapacityIndex, *, explain_all: bool = False
) -> Placement | Unschedulable:
    """Where one instance of ``request`` would go now, or why it cannot go anywhere.

    ``explain_all`` adds, to a placement, why each other worker was not chosen; an
    :class:`Unschedulable` always carries one reason per worker.
    """
    if request.gpu_selector:
        found, local = _manual(request, capacity, parse_gpu_selector(request.gpu_selector)), False
    else:
        found, local = _automatic(request, capacity)
    if found is None:
        explained = explain(request, capacity)
        reasons = {
            name: reason or "fits part of it, but too few workers fit to form a group"
            for name, reason in explained.items()
        }
        return Unschedulable(_summary(request, reasons), reasons)
    names = {wid: capacity.worker(wid).name for wid in found.worker_ids}
    text = describe(found, names, request.strategy)
    if local:
        text = f"model files already on {names[found.worker_ids[0]]}; {text}"
    others: dict[str, str] = {}
    if explain_all:
        chosen = ", ".join(names.values())
        why = "holds the model files" if local else f"{request.strategy.value} prefers it"
        for name, reason in explain(request, capacity).items():
            if name not in names.values():
                others[name] = reason or f"fits too; {chosen} was chosen: {why}"
    return Placement(
        claim=_claim(found),
        worker_ids=found.worker_ids,
        tp_size=found.tp_size,
        pp_size=found.pp_size,
        score=score(found, request.strategy),
        explanation=text,
        estimate=found.estimate,
        reasons=others,
    )


def evaluate(request: PlacementRequest, capacity: CapacityIndex) -> Placement | Unschedulable:
    """Dry run: would the instance fit, where, with what claim — nothing is reserved."""
    return place(request, capacity, explain_all=True)


def _claim(found: Candidate) -> Claim:
    if not found.gpus:
        return Claim(ram=(RamClaim(found.worker_ids[0], found.ram_bytes),))
    return Claim(gpus=tuple(GpuClaim(ref, amount) for ref, amount in found.gpus))


def _automatic(request: PlacementRequest, capacity: CapacityIndex) -> tuple[Candidate | None, bool]:
    """The chosen candidate, and whether model file locality decided it."""
    allowed = allowed_workers(request, capacity)
    strategy = request.strategy
    preferred_ids = request.preferred_worker_ids
    if allowed is not None:
        preferred_ids = preferred_ids & allowed
    preferred = find.ready_ids(capacity, preferred_ids)
    vendors = request.gpu_vendors
    sizes = sorted(request.estimates)
    if vendors and sizes:
        valid = valid_tp_sizes(request, sizes[-1])
        shapes = capacity.shapes()
        for count in sizes:
            if count not in valid:
                continue
            estimate = request.estimates[count]
            claims = find.shape_claims(shapes, estimate, vendors)
            if not claims:
                continue
            found = find.scan(capacity, preferred, estimate, count, claims, strategy)
            if found is not None:
                return found, True
            found = find.single_worker(capacity, estimate, count, claims, strategy, allowed)
            if found is not None:
                return found, False
        if request.can_span_workers:
            for total in sizes:
                estimate = request.estimates[total]
                claims = find.shape_claims(shapes, estimate, vendors)
                for per_worker in range(total // 2, 0, -1):
                    if total % per_worker or per_worker not in valid or not claims:
                        continue
                    workers = total // per_worker
                    found = find.spanning(
                        capacity, estimate, per_worker, workers, claims, strategy, allowed
                    )
                    if found is not None:
                        return found, False
    if request.allows_cpu and request.cpu_ram_bytes is not None:
        need = request.cpu_ram_bytes
        found = find.cpu(capacity, need, strategy, allowed, workers=preferred)
        if found is not None:
            return found, True
        return find.cpu(capacity, need, strategy, allowed), False
    return None, False


def _manual(
    request: PlacementRequest, capacity: CapacityIndex, selected: tuple[SelectedGpu, ...]
) -> Candidate | None:
    """Only GPUs named in ``gpu_selector``; ``gpus_per_replica`` of them (or the smallest
    count in ``estimates`` that fits) on one worker, or spread evenly over several."""
    allowed = allowed_workers(request, capacity)
    pools: list[tuple[WorkerSnapshot, list[tuple[GpuVendor, int]]]] = []
    for name in dict.fromkeys(item.worker for item in selected):
        wid = capacity.worker_id(name)
        if wid is None or (allowed is not None and wid not in allowed):
            continue
        worker = capacity.worker(wid)
        if state_reason(worker) or selection_reason(worker, selected, request):
            continue
        pool = selected_on(worker, selected, request)
        if pool:
            pools.append((worker, pool))
    sizes = [request.gpus_per_replica] if request.gpus_per_replica else sorted(request.estimates)
    sizes = [count for count in sizes if count in request.estimates]
    valid = valid_tp_sizes(request, max(sizes, default=1))
    strategy = request.strategy
    for count in sizes:
        if count in valid:
            estimate = request.estimates[count]
            options = [
                find.manual_on_worker(capacity, w, pool, estimate, count, strategy)
                for w, pool in pools
            ]
            local = [c for c in options if c and c.worker_ids[0] in request.preferred_worker_ids]
            found = best(local, strategy) or best(options, strategy)
            if found is not None:
                return found
    for count in sizes if request.can_span_workers else ():
        estimate = request.estimates[count]
        for per_worker in range(count // 2, 0, -1):
            if count % per_worker or per_worker not in valid:
                continue
            workers = count // per_worker
            options = [
                find.manual_on_worker(capacity, w, pool, estimate, per_worker, strategy)
                for w, pool in pools
            ]
            parts = sorted((c for c in options if c is not None), key=lambda c: c.key)
            if len(parts) >= workers:
                picked = parts[:workers] if strategy is Strategy.BINPACK else parts[::-1][:workers]
                return find.combine(picked, (sum(p.key[0] for p in picked),))
    return None


def explain(request: PlacementRequest, capacity: CapacityIndex) -> dict[str, str | None]:
    """One reason per worker (by name) why it cannot take the instance on its own; None
    for a worker that could. Unknown workers named in ``gpu_selector`` are listed too."""
    selected = parse_gpu_selector(request.gpu_selector) if request.gpu_selector else None
    sizes = sorted(request.estimates)
    if selected is not None and request.gpus_per_replica:
        sizes = [request.gpus_per_replica]
    context = _Context(request, capacity, selected, request.gpu_vendors, sizes)
    reasons: dict[str, str | None] = {}
    for worker in sorted(capacity.workers(), key=lambda w: w.name):
        reasons[worker.name] = _worker_reason(context, worker)
    for item in selected or ():
        if capacity.worker_id(item.worker) is None:
            reasons[item.worker] = "no such worker (named in gpu_selector)"
    return reasons


@dataclass(slots=True)
class _Context:
    request: PlacementRequest
    capacity: CapacityIndex
    selected: tuple[SelectedGpu, ...] | None
    vendors: frozenset[GpuVendor]
    sizes: list[int]
    seen: dict[object, str | None] = field(default_factory=dict)  # same GPUs, same reason


def _worker_reason(c: _Context, worker: WorkerSnapshot) -> str | None:
    request, capacity = c.request, c.capacity
    found = state_reason(worker) or labels_reason(worker, request.worker_selector)
    if found is None and c.selected is not None:
        found = selection_reason(worker, c.selected, request)
    found = found or vendor_reason(worker, request, c.vendors)
    if found is not None:
        return found
    if not any(g.vendor in c.vendors for g in worker.gpus):  # a CPU placement
        need, free = request.cpu_ram_bytes or 0, capacity.ram_free(worker.id)
        return None if free >= need else f"needs {gib(need)} RAM, {gib(free)} free"
    if c.selected is not None:
        frees = capacity.gpu_frees(worker.id)
        totals = {(g.vendor, g.index): g.memory_total for g in worker.gpus}
        pool = selected_on(worker, c.selected, request)
        groups = [[(totals[key], frees[key]) for key in pool]]
    else:
        groups = [
            [(size, free) for free in frees]
            for (vendor, size), frees in capacity.shape_frees(worker.id).items()
            if vendor in c.vendors
        ]
    key = tuple(tuple(g) for g in groups)
    if key not in c.seen:
        c.seen[key] = capacity_reason(request, groups, c.sizes, manual=c.selected is not None)
    return c.seen[key]


def _summary(request: PlacementRequest, reasons: dict[str, str]) -> str:
    what = f"{request.model!r} ({request.backend})"
    if not reasons:
        return f"cannot place {what}: no workers are registered; start a worker first"
    text = f"cannot place {what} on any of {len(reasons)} workers"
    if request.can_span_workers:
        text += ", alone or several together"
    if all(reason.startswith(_NOT_READY) for reason in reasons.values()):
        return text + ": no worker is ready"
    return text + "; the reason per worker says what to change"
