"""Open and close a server's resources: engine, schema, first-start data."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from maasbase.common.clock import Clock, SystemClock
from maasbase.common.config import Settings
from maasbase.server import bootstrap
from maasbase.server.db import backends as backends_db
from maasbase.server.db import engine as db_engine
from maasbase.server.db import migrate
from maasbase.server.state import ServerState

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Opened:
    state: ServerState
    bootstrap: bootstrap.BootstrapResult


async def open_server(
    settings: Settings, database_url: str, *, clock: Clock | None = None
) -> Opened:
    """Connect, migrate to the newest schema, run first-start steps."""
    engine = db_engine.create_engine(database_url)
    try:
        await migrate.upgrade(engine)
        sessions = db_engine.session_factory(engine)
        async with sessions() as session:
            result = await bootstrap.run(session, settings)
            await session.commit()
            registry = await backends_db.registry(session)
    except BaseException:
        await engine.dispose()
        raise
    state = ServerState(
        settings=settings,
        engine=engine,
        sessions=sessions,
        jwt_secret=result.jwt_secret,
        secret_box=result.secret_box,
        clock=clock or SystemClock(),
        backends=registry,
    )
    return Opened(state=state, bootstrap=result)


async def close_server(state: ServerState) -> None:
    await state.engine.dispose()
