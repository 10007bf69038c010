"""Process-wide state of a running server, built at start and shared by all requests."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from maasbase.backends.registry import BackendRegistry
from maasbase.common.clock import Clock, SystemClock
from maasbase.common.config import Settings
from maasbase.server.notify import ChangeNotifier
from maasbase.server.security.secret_box import SecretBox
from maasbase.server.security.throttle import LoginThrottle, ThrottlePolicy


@dataclass
class ServerState:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    jwt_secret: str
    # Encrypts provider API keys at rest (key kept outside the database).
    secret_box: SecretBox
    clock: Clock = field(default_factory=SystemClock)
    throttle: LoginThrottle = field(init=False)
    # Instances or workers changed: wakes assignment watches and the controllers.
    changes: ChangeNotifier = field(default_factory=ChangeNotifier)
    backends: BackendRegistry = field(default_factory=BackendRegistry.default)
    # Stored secrets already reported as undecryptable, so each is logged once.
    reported_secrets: set[str] = field(default_factory=set)
    # Set when the server begins to stop: long-polls answer at once.
    stopping: bool = False

    def begin_shutdown(self) -> None:
        self.stopping = True
        self.changes.notify()

    def __post_init__(self) -> None:
        self.throttle = LoginThrottle(
            ThrottlePolicy(
                max_failures=self.settings.login_max_failures,
                window=float(self.settings.login_lockout_seconds),
            )
        )
