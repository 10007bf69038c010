"""Gateway settings: balancing, affinity, retries, timeouts, caches and metering."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from maasbase.gateway.balancer import Cooldown, Policy


@dataclass(frozen=True)
class GatewayConfig:
    policy: Policy = Policy.P2C
    # Requests carrying this header go to the same upstream per header value (KV-cache reuse).
    affinity_header: str | None = "x-session-id"
    # Hash the start of the prompt when no affinity header is sent.
    prefix_affinity: bool = False
    prefix_chars: int = 256
    # Connection errors and these statuses are retried once on another upstream, before
    # anything was sent to the client.
    retries: int = 1
    retry_statuses: frozenset[int] = frozenset({502, 503})
    cooldown: Cooldown = field(default_factory=Cooldown)
    connect_timeout: float = 10.0
    read_timeout: float = 600.0  # longest wait for the first byte, then between chunks
    max_body_bytes: int = 64 * 1024 * 1024
    key_cache_ttl: float = 30.0
    key_negative_ttl: float = 5.0
    usage_flush_interval: float = 1.0
    usage_batch_size: int = 500
    # Usage batches wait here, on disk, until the server took them (standalone gateways:
    # ``<data dir>/gateway-usage``); None keeps them in memory only.
    usage_spool: Path | None = None
    usage_spool_max_bytes: int = 256 * 1024 * 1024
    # Until the first routing table arrives, requests wait this long before a 503.
    routes_wait: float = 5.0
    # "pooled" (httptools, the fast one) or "aiohttp".
    upstream_client: str = "pooled"
