"""The worker state policy: derived from facts, every change owned by the right party."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from maasbase.common.workers import WorkerState as S
from maasbase.server.policies.worker_state import (
    TRANSITIONS,
    IllegalTransition,
    Owner,
    WorkerFacts,
    decide,
    derive,
)

TIMEOUT = 30.0


def facts(
    *, maintenance: bool = False, registered: float = 0.0, heartbeat: float | None = None
) -> WorkerFacts:
    return WorkerFacts(maintenance=maintenance, registered_at=registered, last_heartbeat=heartbeat)


@pytest.mark.parametrize(
    ("worker", "now", "expected"),
    [
        (facts(), 10.0, S.NOT_READY),
        (facts(), 31.0, S.UNREACHABLE),
        (facts(heartbeat=5.0), 20.0, S.READY),
        (facts(heartbeat=5.0), 35.0, S.READY),
        (facts(heartbeat=5.0), 35.1, S.UNREACHABLE),
        (facts(heartbeat=5.0, maintenance=True), 100.0, S.MAINTENANCE),
        # A restart (new registration) makes older heartbeats not count.
        (facts(registered=50.0, heartbeat=40.0), 55.0, S.NOT_READY),
    ],
)
def test_derive(worker: WorkerFacts, now: float, expected: S) -> None:
    assert derive(worker, now=now, timeout=TIMEOUT) is expected


def test_changes_carry_messages() -> None:
    change = decide(S.READY, facts(heartbeat=0.0), now=45.0, timeout=TIMEOUT, owner=Owner.LIVENESS)
    assert change is not None
    assert change.to is S.UNREACHABLE
    assert "no heartbeat for 45 s" in change.message
    back = decide(
        S.UNREACHABLE, facts(heartbeat=46.0), now=46.0, timeout=TIMEOUT, owner=Owner.HEARTBEAT
    )
    assert back is not None
    assert back.to is S.READY


def test_wrong_owner_is_refused() -> None:
    with pytest.raises(IllegalTransition, match="heartbeat handler may not"):
        decide(S.READY, facts(maintenance=True), now=1.0, timeout=TIMEOUT, owner=Owner.HEARTBEAT)


@given(
    current=st.sampled_from(list(S)),
    maintenance=st.booleans(),
    registered=st.floats(0, 100),
    heartbeat=st.none() | st.floats(0, 200),
    now=st.floats(0, 300),
    owner=st.sampled_from(list(Owner)),
)
def test_every_change_is_in_the_table(
    current: S,
    maintenance: bool,
    registered: float,
    heartbeat: float | None,
    now: float,
    owner: Owner,
) -> None:
    worker = facts(maintenance=maintenance, registered=registered, heartbeat=heartbeat)
    try:
        change = decide(current, worker, now=now, timeout=TIMEOUT, owner=owner)
    except IllegalTransition:
        assert TRANSITIONS.get((current, derive(worker, now=now, timeout=TIMEOUT))) is not owner
        return
    if change is None:
        assert derive(worker, now=now, timeout=TIMEOUT) is current
    else:
        assert TRANSITIONS[(current, change.to)] is owner
        assert change.message
