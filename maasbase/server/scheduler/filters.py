"""Filters: may this worker take the request at all? Each returns None or a reason.

The order is the order in which reasons are reported: state, labels, manual GPU
selection, vendor fit, tensor-parallel validity. Capacity comes last (see :mod:`.place`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from maasbase.common.hardware import GpuVendor
from maasbase.common.workers import WorkerState
from maasbase.server.estimate import (
    claimed_bytes,
    required_gpu_total,
    valid_tensor_parallel_sizes,
)

from .capacity import CapacityIndex
from .types import InvalidPlacementRequest, PlacementRequest, WorkerSnapshot, gib

_STATE_REASONS = {
    WorkerState.NOT_READY: "not ready: no heartbeat yet",
    WorkerState.UNREACHABLE: "unreachable: no heartbeat within the timeout",
    WorkerState.MAINTENANCE: "in maintenance",
}
_SELECTOR = re.compile(r"^(?P<worker>[^:\s]+):(?:(?P<vendor>[a-z]+):)?(?P<index>\d+)$")


class InvalidGpuSelector(InvalidPlacementRequest):
    code = "invalid_gpu_selector"


@dataclass(frozen=True, slots=True)
class SelectedGpu:
    """One ``gpu_selector`` entry: ``worker:index`` or ``worker:vendor:index``."""

    worker: str
    vendor: GpuVendor | None
    index: int

    def __str__(self) -> str:
        vendor = f"{self.vendor.value}:" if self.vendor else ""
        return f"{self.worker}:{vendor}{self.index}"


def parse_gpu_selector(entries: tuple[str, ...]) -> tuple[SelectedGpu, ...]:
    selected: list[SelectedGpu] = []
    vendors = {v.value for v in GpuVendor}
    for entry in entries:
        match = _SELECTOR.match(entry.strip())
        if match is None or (match["vendor"] and match["vendor"] not in vendors):
            raise InvalidGpuSelector(
                f"bad gpu_selector entry {entry!r}: use worker-name:index or "
                f"worker-name:vendor:index, e.g. gpu-node-1:0 or gpu-node-1:nvidia:0"
            )
        vendor = GpuVendor(match["vendor"]) if match["vendor"] else None
        item = SelectedGpu(match["worker"], vendor, int(match["index"]))
        if item not in selected:
            selected.append(item)
    return tuple(selected)


def state_reason(worker: WorkerSnapshot) -> str | None:
    return _STATE_REASONS.get(worker.state)


def labels_match(labels: Mapping[str, str], selector: Mapping[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def labels_reason(worker: WorkerSnapshot, selector: Mapping[str, str]) -> str | None:
    """``labels gpu=h100 not matched (has gpu=l4)``."""
    missed = [(k, v) for k, v in selector.items() if worker.labels.get(k) != v]
    if not missed:
        return None
    wanted = ", ".join(f"{k}={v}" for k, v in missed)
    has = ", ".join(
        f"{k}={worker.labels[k]}" if k in worker.labels else f"no {k} label" for k, _ in missed
    )
    return f"labels {wanted} not matched (has {has})"


def vendor_reason(
    worker: WorkerSnapshot, request: PlacementRequest, vendors: frozenset[GpuVendor]
) -> str | None:
    """``vendors`` is ``request.gpu_vendors``, computed once by the caller."""
    if any(g.vendor in vendors for g in worker.gpus):
        return None
    if not worker.gpus and request.allows_cpu:
        return None
    if not vendors:
        return "has GPUs; CPU placements go to workers without GPUs"
    names = ", ".join(sorted(v.value for v in vendors))
    reason = f"no GPU of a supported vendor ({names})"
    if request.allows_cpu:
        reason += "; CPU placements go to workers without GPUs"
    return reason


def tp_reason(count: int, request: PlacementRequest) -> str | None:
    """Why ``count`` GPUs cannot form one tensor-parallel group for this model."""
    heads, kv_heads = request.num_attention_heads, request.num_kv_heads
    if count in valid_tensor_parallel_sizes(heads or 0, count, kv_heads):
        return None
    if heads and heads % count:
        return f"tensor parallel {count} does not divide {heads} attention heads"
    return f"tensor parallel {count} does not split {kv_heads} KV heads evenly"


def valid_tp_sizes(request: PlacementRequest, largest: int) -> frozenset[int]:
    heads, kv_heads = request.num_attention_heads, request.num_kv_heads
    return frozenset(valid_tensor_parallel_sizes(heads or 0, largest, kv_heads))


def allowed_workers(request: PlacementRequest, capacity: CapacityIndex) -> frozenset[int] | None:
    """Ids of the workers whose labels match ``worker_selector``; None when there is no
    selector (every worker matches). Cached in ``capacity`` until a worker changes."""
    if not request.worker_selector:
        return None
    selector = tuple(sorted(request.worker_selector.items()))

    def compute() -> frozenset[int]:
        wanted = dict(selector)
        return frozenset(w.id for w in capacity.workers() if labels_match(w.labels, wanted))

    return capacity.memo(("labels", selector), compute)


def selection_reason(
    worker: WorkerSnapshot, selected: tuple[SelectedGpu, ...], request: PlacementRequest
) -> str | None:
    """Why a worker takes no part in a manual GPU selection."""
    mine = [s for s in selected if s.worker == worker.name]
    if not mine:
        return "not named in gpu_selector"
    for item in mine:
        vendors = [item.vendor] if item.vendor else sorted(request.gpu_vendors)
        if not any(worker.gpu(v, item.index) for v in vendors):
            return f"GPU {item.index} named in gpu_selector does not exist"
    return None


def selected_on(
    worker: WorkerSnapshot, selected: tuple[SelectedGpu, ...], request: PlacementRequest
) -> list[tuple[GpuVendor, int]]:
    """The existing, supported GPUs the selection names on ``worker``."""
    found: list[tuple[GpuVendor, int]] = []
    for item in selected:
        if item.worker != worker.name:
            continue
        vendors = [item.vendor] if item.vendor else sorted(request.gpu_vendors)
        for vendor in vendors:
            if vendor in request.gpu_vendors and worker.gpu(vendor, item.index) is not None:
                if (vendor, item.index) not in found:
                    found.append((vendor, item.index))
                break
    return found


def capacity_reason(
    request: PlacementRequest,
    groups: list[list[tuple[int, int]]],
    sizes: list[int],
    *,
    manual: bool,
) -> str | None:
    """Why none of the GPU ``groups`` of one worker — each a list of ``(total, free)`` of
    GPUs that may form one tensor-parallel group — fits the request at any of ``sizes``;
    None when one does. ``manual``: the groups are the GPUs named in ``gpu_selector``."""
    valid = valid_tp_sizes(request, max(sizes, default=1))
    largest = max((len(g) for g in groups), default=0)
    where = "selected GPUs" if manual else "GPUs"
    parts: list[str] = []
    for count in sizes:
        estimate = request.estimates.get(count)
        if count not in valid:
            if manual:
                parts.append(tp_reason(count, request) or "")
            continue
        if estimate is None:
            parts.append(f"no memory estimate for {count} GPUs")
            continue
        if count > largest:
            if manual:
                parts.append(f"gpu_selector names {largest} of its GPUs, {count} needed")
            else:
                parts.append(
                    f"tensor parallel {count} needs {count} GPUs of one model, has {largest}"
                )
            break  # larger counts fail the same way
        # vLLM/SGLang need a GPU of some size whatever is free; llama.cpp just free memory.
        need = required_gpu_total(estimate) if estimate.gpu_memory_utilization is not None else 0
        options = [
            (free - claimed_bytes(estimate, total), free, claimed_bytes(estimate, total))
            for group in groups
            if len(group) >= count
            for total, free in group
            if total >= need
        ]
        if not options:
            biggest = max(total for group in groups for total, _ in group)
            util = estimate.gpu_memory_utilization
            uses = f" ({estimate.engine} uses {util:g} of it)" if util is not None else ""
            what = "needs a GPU" if count == 1 else f"tensor parallel {count} needs GPUs"
            parts.append(
                f"{what} with at least {gib(need)} of memory{uses}, largest has {gib(biggest)}"
            )
            continue
        if count == 1:
            left, free, claim = max(options)
            if left >= 0:
                return None
            parts.append(f"needs {gib(claim)} VRAM per GPU, {gib(free)} free on best {where[:-1]}")
            continue
        fitting, claim = 0, 0
        for group in groups:
            sized = [(t, f) for t, f in group if t >= need]
            if len(group) < count or not sized:
                continue
            fits = sum(1 for t, f in sized if f >= claimed_bytes(estimate, t))
            if fits >= count:
                return None
            if fits >= fitting:
                fitting, claim = fits, claimed_bytes(estimate, max(t for t, _ in sized))
        verb = "has" if fitting == 1 else "have"
        parts.append(
            f"tensor parallel {count} needs {gib(claim)} VRAM on each of {count} {where}, "
            f"{fitting} {verb} it"
        )
    if not parts:
        smallest = min(sizes, default=1)
        return tp_reason(smallest, request) or f"no GPU count to try for {smallest} GPUs"
    return "; ".join(parts)
