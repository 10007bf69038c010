"""Marks workers unreachable when their heartbeats stop (the liveness controller's
transitions in ``policies.worker_state``)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from maasbase.common.workers import WorkerState
from maasbase.server.db import workers as workers_db
from maasbase.server.policies import worker_state
from maasbase.server.policies.worker_state import Owner
from maasbase.server.state import ServerState

logger = logging.getLogger(__name__)


class WorkerLiveness:
    def __init__(self, state: ServerState) -> None:
        self.state = state

    @property
    def interval(self) -> float:
        return max(0.2, min(5.0, self.state.settings.worker_timeout / 5))

    async def reconcile_once(self) -> int:
        """Record every due ``unreachable`` transition; return how many were recorded."""
        now = self.state.clock.now()
        timeout = self.state.settings.worker_timeout
        changed = 0
        async with self.state.sessions() as session:
            for worker in await workers_db.list_all(session):
                current = WorkerState(worker.state)
                facts = workers_db.facts_of(worker)
                target = worker_state.derive(facts, now=now, timeout=timeout)
                if target is not WorkerState.UNREACHABLE or current is target:
                    continue
                change = worker_state.decide(
                    current, facts, now=now, timeout=timeout, owner=Owner.LIVENESS
                )
                assert change is not None
                applied = await workers_db.set_state_if_unchanged(
                    session,
                    worker.id,
                    expected_state=current.value,
                    expected_heartbeat=worker.last_heartbeat_at,
                    state=change.to.value,
                    message=change.message,
                    now=datetime.fromtimestamp(now, UTC),
                )
                if applied:
                    changed += 1
                    logger.warning("worker %s is unreachable: %s", worker.name, change.message)
            await session.commit()
        return changed
