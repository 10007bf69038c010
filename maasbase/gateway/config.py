"""Gateway settings: balancing, affinity, retries, timeouts, caches, metering and the
bounds its HTTP server keeps at its edges."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from maasbase.gateway.balancer import Cooldown, Policy

MiB = 1024 * 1024


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
    # Request bodies: uploads (multipart audio and image endpoints) may be this large ...
    max_body_bytes: int = 64 * MiB
    # ... JSON endpoints (chat, completions, embeddings, rerank, speech, images, messages)
    # this large; GET endpoints take no body, other paths at most 64 KiB. Larger: 413.
    max_json_body_bytes: int = 16 * MiB
    # An upstream answer (whole, or a stream in total) larger than this is cut: a 502
    # before the client got anything, a connection closed mid-body after.
    max_response_bytes: int = 128 * MiB
    # Where a model's engines report their context length, a prompt that cannot fit is
    # refused (400) before any engine sees it: one with more token ids, or more characters
    # than this many per token of context (no token of a real vocabulary is longer), than
    # the context holds. Prompts closer to the limit are the engine's to refuse.
    max_chars_per_token: int = 128
    # Client connections one gateway process holds; past it new ones get a 503 and are
    # closed (the process's open-file limit must be above it).
    max_connections: int = 10_000
    # A request's line and headers must arrive within this many seconds of its first byte
    # (else 408 and close), whatever trickles in meanwhile ...
    header_timeout: float = 10.0
    # ... and its body within ``body_timeout`` seconds plus one second for every
    # ``min_body_rate`` bytes received: a client sending slower than that is cut (408).
    body_timeout: float = 30.0
    min_body_rate: int = 16 * 1024
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
