"""How many tokens of context a running engine takes, as the engine itself says.

vLLM and SGLang list ``max_model_len`` for each model in ``GET /v1/models``; llama.cpp
gives each slot's ``n_ctx`` in ``GET /props`` (its ``-c`` divided among its slots, which
is what one request gets). The gateway uses the figure to refuse prompts that cannot
fit before an engine spends time on them. An engine that says neither gives ``None``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

PROBE_TIMEOUT_SECONDS = 2.0


def _positive(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def from_models_list(data: Any) -> int | None:
    """The smallest ``max_model_len`` of an OpenAI-style model list (vLLM, SGLang)."""
    entries = data.get("data") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        return None
    found = [
        n
        for entry in entries
        if isinstance(entry, dict) and (n := _positive(entry.get("max_model_len")))
    ]
    return min(found) if found else None


def from_props(data: Any) -> int | None:
    """A slot's ``n_ctx`` from llama.cpp's ``/props``."""
    if not isinstance(data, dict):
        return None
    settings = data.get("default_generation_settings")
    if isinstance(settings, dict) and (found := _positive(settings.get("n_ctx"))):
        return found
    return _positive(data.get("n_ctx"))


PROBES: tuple[tuple[str, Callable[[Any], int | None]], ...] = (
    ("/v1/models", from_models_list),
    ("/props", from_props),
)


async def engine_context(base_url: str) -> int | None:
    """Tokens of context the engine at ``base_url`` (``http://host:port``) takes per
    request, or ``None`` when it does not say."""
    async with httpx.AsyncClient(timeout=PROBE_TIMEOUT_SECONDS) as client:
        for path, pick in PROBES:
            try:
                response = await client.get(base_url + path)
                data = response.json() if response.status_code == 200 else None
            except (httpx.HTTPError, ValueError):
                continue
            found = pick(data)
            if found is not None:
                return found
    return None
