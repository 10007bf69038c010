"""The model controller: replicas, rolling updates, recovery and scheduling.

Level-triggered: each model is reconciled from what the database says now, whatever
caused the wake-up. Keys go through a ``KeyedQueue`` (one model at a time, failures
retried with backoff); a periodic resync enqueues every model so nothing waits on a
lost notification.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Hashable
from datetime import UTC, datetime

from maasbase.common.instances import InstanceState
from maasbase.common.workers import WorkerState
from maasbase.server.controllers.queue import KeyedQueue
from maasbase.server.controllers.scheduling import Scheduling
from maasbase.server.db import backends as backends_db
from maasbase.server.db import instances as instances_db
from maasbase.server.db import models as models_db
from maasbase.server.db import workers as workers_db
from maasbase.server.policies import recovery, replicas
from maasbase.server.policies.instance_state import Owner
from maasbase.server.state import ServerState

logger = logging.getLogger(__name__)

SCHEDULE = "schedule"
RESYNC_SECONDS = 2.0


class ModelController:
    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.scheduling = Scheduling(state)
        self.queue = KeyedQueue(self._handle, name="model controller")

    async def _handle(self, key: Hashable) -> None:
        if key == SCHEDULE:
            await self.scheduling.schedule_pending()
        else:
            assert isinstance(key, int)
            if await self.reconcile_model(key):
                self.queue.add(SCHEDULE)

    async def reconcile_model(self, model_id: int) -> bool:
        """Replicas, rolling update and recovery of one model. True when anything changed."""
        now_ts = self.state.clock.now()
        now = datetime.fromtimestamp(now_ts, UTC)
        grace = self.state.settings.reschedule_grace
        changed = False
        async with self.state.sessions() as session:
            model = await models_db.get(session, model_id)
            if model is None:
                return False
            workers = {w.id: w for w in await workers_db.list_all(session)}
            instances = await instances_db.for_model(session, model.id)

            for instance in instances:
                worker = workers.get(instance.worker_id) if instance.worker_id else None
                view = recovery.PlacedView(
                    state=InstanceState(instance.state),
                    worker_name=worker.name if worker else None,
                    worker_state=WorkerState(worker.state) if worker else None,
                    state_changed_at=instance.state_changed_at.timestamp(),
                    next_restart_at=(
                        instance.next_restart_at.timestamp() if instance.next_restart_at else None
                    ),
                    restart_count=instance.restart_count,
                )
                if view.state is InstanceState.PENDING:
                    continue
                step = recovery.recover(view, now=now_ts, grace=grace)
                if step is None:
                    continue
                instances_db.transition(
                    instance, step.to, owner=Owner.CONTROLLER, message=step.message, now=now
                )
                if step.restart:
                    instance.restart_count += 1
                    instance.next_restart_at = None
                if step.release:
                    instances_db.release_placement(instance)
                changed = True

            views = [
                replicas.InstanceView(
                    id=i.id,
                    state=InstanceState(i.state),
                    spec_hash=i.spec_hash,
                    state_changed_at=i.state_changed_at.timestamp(),
                )
                for i in instances
            ]
            by_id = {i.id: i for i in instances}
            for action in replicas.plan(
                replicas=model.replicas, spec_hash=model.spec_hash, instances=views, now=now_ts
            ):
                if isinstance(action, replicas.Create):
                    for _ in range(action.count):
                        await instances_db.create(
                            session,
                            model_id=model.id,
                            model_name=model.name,
                            spec_hash=model.spec_hash,
                            now=now,
                        )
                    logger.info("model %s: +%d instance(s): %s", model.name, action.count,
                                action.reason)  # fmt: skip
                else:
                    await instances_db.delete(session, by_id[action.instance_id])
                    logger.info("model %s: removed instance %s: %s", model.name,
                                by_id[action.instance_id].name, action.reason)  # fmt: skip
                changed = True
            await session.commit()
        if changed:
            self.state.changes.notify()
        return changed

    async def resync(self) -> None:
        async with self.state.sessions() as session:
            ids = [m.id for m in await models_db.list_all(session)]
            # Another server replica may have added or removed user-defined backends.
            self.state.backends = await backends_db.registry(session)
        for model_id in ids:
            self.queue.add(model_id)
        self.queue.add(SCHEDULE)

    async def reconcile_all(self) -> None:
        """One full pass (what the loop does every few seconds); used by tests too."""
        await self.resync()
        await self.queue.drain()

    async def run(self, stop: asyncio.Event) -> None:
        async def periodic() -> None:
            while not stop.is_set():
                try:
                    await self.resync()
                except Exception:
                    logger.exception("model controller resync failed")
                version = self.state.changes.version
                await self.state.changes.wait(version, RESYNC_SECONDS)

        async with asyncio.TaskGroup() as group:
            group.create_task(periodic())
            group.create_task(self.queue.run(stop))
