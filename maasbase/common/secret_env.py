"""Which environment variable names hold secrets.

Shared by the server (a model's secret ``env`` entries are encrypted at rest and never
shown) and the worker (an engine never inherits the worker's own secrets).
"""

from __future__ import annotations

# Secret by name, whatever the model says.
SECRET_NAMES = frozenset({"HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "TOKEN", "SECRET", "PASSWORD"})
SECRET_SUFFIXES = ("_TOKEN", "_KEY", "_SECRET", "_PASSWORD")


def is_secret_name(name: str) -> bool:
    """Whether ``name`` looks like it holds a secret: ``*_TOKEN``, ``*_KEY``,
    ``*_SECRET``, ``*_PASSWORD`` (any case), ``HF_TOKEN``, ``HUGGING_FACE_HUB_TOKEN``."""
    upper = name.upper()
    return upper in SECRET_NAMES or upper.endswith(SECRET_SUFFIXES)
