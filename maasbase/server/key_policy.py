"""Keys never exceed their creator: a pure decision on what a new key may be given.

A caller's powers are its scope, the models it may use, its expiry and its limits. A
session (password login) has every power; an API key has its own. A new key must fit
inside the powers of whoever creates it, dimension by dimension, so no key can mint a
wider one. ``excess`` names the first dimension that does not fit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from maasbase.common.auth import Scope


@dataclass(frozen=True)
class KeyPowers:
    scope: Scope = Scope.ALL
    allowed_models: frozenset[str] | None = None  # None: every model
    expires_at: datetime | None = None  # None: never
    rpm_limit: int | None = None  # None: unlimited
    tpm_limit: int | None = None
    token_quota: int | None = None
    quota_period: str = "month"


SESSION = KeyPowers()  # a password login: every power


def scope_covers(outer: Scope, inner: Scope) -> bool:
    return outer is Scope.ALL or outer is inner


def _limit_excess(name: str, what: str, outer: int | None, inner: int | None) -> str | None:
    if outer is None or (inner is not None and inner <= outer):
        return None
    given = "none" if inner is None else str(inner)
    return (
        f"{name}: the key you authenticate with allows {outer} {what}, so a key it creates "
        f"needs {name} of at most {outer} (given: {given})"
    )


def excess(creator: KeyPowers, wanted: KeyPowers) -> str | None:
    """``None`` when ``wanted`` fits inside ``creator``; else why not, naming the field."""
    if not scope_covers(creator.scope, wanted.scope):
        return (
            f"scope: the key you authenticate with has scope '{creator.scope}', so it can "
            f"only create keys with scope '{creator.scope}' (asked: '{wanted.scope}')"
        )
    if creator.allowed_models is not None:
        if wanted.allowed_models is None:
            return (
                "allowed_models: the key you authenticate with may use only "
                f"{sorted(creator.allowed_models)}; list some of those models"
            )
        extra = wanted.allowed_models - creator.allowed_models
        if extra:
            return (
                f"allowed_models: the key you authenticate with may not use {sorted(extra)}; "
                f"choose among {sorted(creator.allowed_models)}"
            )
    if creator.expires_at is not None and (
        wanted.expires_at is None or wanted.expires_at > creator.expires_at
    ):
        return (
            "expires_at: the key you authenticate with expires at "
            f"{creator.expires_at.isoformat()}; give an expires_at no later than that"
        )
    for name, what, outer, inner in (
        ("rpm_limit", "requests per minute", creator.rpm_limit, wanted.rpm_limit),
        ("tpm_limit", "tokens per minute", creator.tpm_limit, wanted.tpm_limit),
        ("token_quota", f"tokens per {creator.quota_period}", creator.token_quota,
         wanted.token_quota),
    ):  # fmt: skip
        found = _limit_excess(name, what, outer, inner)
        if found is not None:
            return found
    if creator.token_quota is not None and wanted.quota_period != creator.quota_period:
        return (
            f"quota_period: the key you authenticate with has a quota per "
            f"{creator.quota_period}; give quota_period '{creator.quota_period}'"
        )
    return None
