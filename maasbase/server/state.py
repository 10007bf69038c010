"""Process-wide state of a running server, built at start and shared by all requests."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from maasbase.backends.registry import BackendRegistry
from maasbase.common.clock import Clock, SystemClock
from maasbase.common.config import Settings
from maasbase.server.notify import ChangeNotifier
from maasbase.server.security import derived_keys
from maasbase.server.security.secret_box import SecretBox
from maasbase.server.security.throttle import LoginThrottle, ThrottlePolicy


@dataclass
class ServerState:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    # Signs session tokens; derived from the secret key (``derived_keys``), never stored.
    jwt_secret: str
    # Encrypts stored secrets (provider API keys, secret model env); key kept outside the
    # database.
    secret_box: SecretBox
    clock: Clock = field(default_factory=SystemClock)
    throttle: LoginThrottle = field(init=False)
    # Keys what the control plane presents to a worker's own API (``worker_secrets``).
    worker_secret_key: str = field(init=False)
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
        self.worker_secret_key = derived_keys.derive(self.secret_box, derived_keys.WORKER_API)
        self.throttle = LoginThrottle(
            ThrottlePolicy(
                max_failures=self.settings.login_max_failures,
                window=float(self.settings.login_lockout_seconds),
            )
        )
