"""The scheduling step: place every pending instance, one decision at a time, on one
capacity view built from the workers and the claims of placed instances."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from maasbase.common.errors import MaasError
from maasbase.common.hardware import GpuVendor, HardwareReport
from maasbase.common.instances import InstanceState
from maasbase.common.workers import WorkerState
from maasbase.server.db import instances as instances_db
from maasbase.server.db import models as models_db
from maasbase.server.db import workers as workers_db
from maasbase.server.db.tables import ModelInstance, Worker
from maasbase.server.estimate import EstimateRequest, estimate_memory
from maasbase.server.model_metadata import MetadataCache
from maasbase.server.policies.instance_state import PLACED, Owner
from maasbase.server.scheduler import (
    CPU,
    CapacityIndex,
    Claim,
    GpuClaim,
    GpuRef,
    Placement,
    PlacementRequest,
    RamClaim,
    SchedulerError,
    Strategy,
    Unschedulable,
    WorkerSnapshot,
    estimate_table,
    place,
)
from maasbase.server.schemas.models import ModelSpec, spec_of_row
from maasbase.server.state import ServerState

logger = logging.getLogger(__name__)

# RAM kept back on every worker for the OS and the worker itself.
RAM_HEADROOM_FRACTION = 0.10


def snapshot(worker: Worker) -> WorkerSnapshot:
    report = HardwareReport.model_validate(worker.hardware)
    return WorkerSnapshot.from_report(
        worker.id,
        worker.name,
        report,
        state=WorkerState(worker.state),
        labels=dict(worker.labels),
        ram_reserved=int(report.system.memory_total * RAM_HEADROOM_FRACTION),
    )


def claim_to_json(claim: Claim) -> dict[str, Any]:
    return {
        "gpus": [
            {
                "worker_id": c.gpu.worker_id,
                "vendor": c.gpu.vendor.value,
                "index": c.gpu.index,
                "bytes": c.bytes,
            }
            for c in claim.gpus
        ],
        "ram": [{"worker_id": c.worker_id, "bytes": c.bytes} for c in claim.ram],
    }


def claim_from_json(data: dict[str, Any]) -> Claim:
    return Claim(
        gpus=tuple(
            GpuClaim(GpuRef(g["worker_id"], GpuVendor(g["vendor"]), g["index"]), g["bytes"])
            for g in data.get("gpus", [])
        ),
        ram=tuple(RamClaim(r["worker_id"], r["bytes"]) for r in data.get("ram", [])),
    )


class Scheduling:
    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.metadata = MetadataCache()

    async def request_for(self, model: ModelSpec, *, name: str) -> PlacementRequest:
        """The placement request for one instance of ``model`` (reads model metadata)."""
        definition = self.state.backends.get(model.backend)
        meta = await self.metadata.get(model.source)
        engine = model.backend
        estimate_request = EstimateRequest(engine, tuple(model.backend_parameters))
        vendors = {v.value for v in definition.supported_vendors}
        cpu_ram = None
        if CPU in vendors:
            cpu_ram = estimate_memory(meta, estimate_request).total_bytes
        return PlacementRequest(
            model=name,
            backend=model.backend,
            estimates=estimate_table(meta, estimate_request) if vendors - {CPU} else {},
            vendors=frozenset(vendors),
            strategy=Strategy(model.placement),
            worker_selector=dict(model.worker_selector),
            gpu_selector=tuple(model.gpu_selector or ()),
            gpus_per_replica=model.gpus_per_replica if model.gpu_selector else None,
            can_span_workers=False,
            num_attention_heads=meta.num_attention_heads or None,
            num_kv_heads=meta.num_kv_heads or None,
            cpu_ram_bytes=cpu_ram,
        )

    async def capacity(self, session: AsyncSession) -> CapacityIndex:
        capacity = CapacityIndex([snapshot(w) for w in await workers_db.list_all(session)])
        for instance in await instances_db.list_all(session):
            if InstanceState(instance.state) in PLACED and instance.claim:
                try:
                    capacity.reserve(instance.id, claim_from_json(instance.claim))
                except (SchedulerError, MaasError) as exc:
                    # The worker's hardware changed under a placed instance; its claim
                    # cannot be honoured and the rest of the cluster must still schedule.
                    logger.warning("claim of instance %s not counted: %s", instance.name, exc)
        return capacity

    async def schedule_pending(self) -> int:
        """Place pending instances; return how many were scheduled.

        Model metadata (possibly a hub request) is read before the database session
        opens, so a slow hub never holds a connection.
        """
        async with self.state.sessions() as session:
            pending_models = {
                i.model_id
                for i in await instances_db.list_all(session)
                if i.state == InstanceState.PENDING.value
            }
            specs = {
                m.id: (m.name, spec_of_row(m))
                for m in await models_db.list_all(session)
                if m.id in pending_models
            }
        if not specs:
            return 0
        requests: dict[int, PlacementRequest | MaasError] = {}
        for model_id, (name, spec) in specs.items():
            try:
                requests[model_id] = await self.request_for(spec, name=name)
            except MaasError as exc:
                requests[model_id] = exc
        now = datetime.fromtimestamp(self.state.clock.now(), UTC)
        scheduled = 0
        async with self.state.sessions() as session:
            capacity = await self.capacity(session)
            for instance in await instances_db.list_all(session):
                request = requests.get(instance.model_id)
                if instance.state != InstanceState.PENDING.value or request is None:
                    continue
                if self._place_one(instance, request, capacity, now):
                    scheduled += 1
            await session.commit()
        if scheduled:
            self.state.changes.notify()
        return scheduled

    def _place_one(
        self,
        instance: ModelInstance,
        request: PlacementRequest | MaasError,
        capacity: CapacityIndex,
        now: datetime,
    ) -> bool:
        if isinstance(request, MaasError):
            instance.state_message = f"waiting: {request.message}"
            return False
        result = place(request, capacity)
        if isinstance(result, Unschedulable):
            instance.state_message = f"unschedulable: {result}"
            return False
        assert isinstance(result, Placement)
        capacity.reserve(instance.id, result.claim)
        self.apply_placement(instance, result, now)
        return True

    @staticmethod
    def apply_placement(instance: ModelInstance, placement: Placement, now: datetime) -> None:
        instances_db.transition(
            instance, InstanceState.ANALYZING, owner=Owner.SCHEDULER, message="placing", now=now
        )
        gpus = placement.claim.gpus
        instances_db.set_fields(
            instance,
            worker_id=placement.worker_ids[0],
            gpu_vendor=gpus[0].gpu.vendor.value if gpus else None,
            gpu_indexes=[c.gpu.index for c in gpus],
            tensor_parallel_size=max(1, placement.tp_size),
            claim=claim_to_json(placement.claim),
        )
        instances_db.transition(
            instance,
            InstanceState.SCHEDULED,
            owner=Owner.SCHEDULER,
            message=placement.explanation,
            now=now,
        )
