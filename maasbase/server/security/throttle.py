"""Login throttling: a pure policy over failure timestamps, plus a small in-memory store.

After ``max_failures`` failed logins for the same (username, client) within
``window`` seconds, further attempts are refused until the oldest failure leaves
the window. A successful login clears the record.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ThrottlePolicy:
    max_failures: int
    window: float


def retry_after(failures: tuple[float, ...], policy: ThrottlePolicy, now: float) -> float:
    """Seconds until another attempt is allowed (0 when allowed now)."""
    recent = [t for t in failures if now - t < policy.window]
    if len(recent) < policy.max_failures:
        return 0.0
    oldest_counted = sorted(recent)[-policy.max_failures]
    # Clamped: a clock that stepped backwards must not lock anyone out for longer.
    return min(policy.window, max(0.0, oldest_counted + policy.window - now))


@dataclass
class LoginThrottle:
    policy: ThrottlePolicy
    max_keys: int = 100_000
    _failures: dict[tuple[str, str], deque[float]] = field(default_factory=dict)

    def check(self, username: str, client: str, now: float) -> float:
        record = self._failures.get((username.lower(), client))
        return retry_after(tuple(record), self.policy, now) if record else 0.0

    def record_failure(self, username: str, client: str, now: float) -> None:
        key = (username.lower(), client)
        record = self._failures.get(key)
        if record is None:
            if len(self._failures) >= self.max_keys:
                self._evict(now)
            record = self._failures[key] = deque(maxlen=self.policy.max_failures)
        record.append(now)

    def record_success(self, username: str, client: str) -> None:
        self._failures.pop((username.lower(), client), None)

    def _evict(self, now: float) -> None:
        stale = [k for k, v in self._failures.items() if not v or now - v[-1] >= self.policy.window]
        for key in stale:
            del self._failures[key]
        if len(self._failures) >= self.max_keys:
            self._failures.clear()
