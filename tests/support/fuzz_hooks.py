"""Schemathesis hooks for the API fuzz runs: the fuzzer keeps its own credentials.

Loaded by ``st run`` through ``SCHEMATHESIS_HOOKS``. A generated request that would
revoke the fuzzer's API keys, or change or delete its users, is sent to an id that does
not exist instead, so the rest of the run still authenticates. (The last-admin
invariant is tested on its own, in ``test_users``.)
"""

from __future__ import annotations

import os
from typing import Any

import schemathesis

UNUSED_ID = 2**31 - 1
_PROTECTED = {
    ("DELETE", "/api/v1/api-keys/{key_id}"): ("key_id", "MAAS_FUZZ_PROTECTED_KEYS"),
    ("PATCH", "/api/v1/users/{user_id}"): ("user_id", "MAAS_FUZZ_PROTECTED_USERS"),
    ("DELETE", "/api/v1/users/{user_id}"): ("user_id", "MAAS_FUZZ_PROTECTED_USERS"),
}


def _ids(variable: str) -> set[int]:
    return {int(part) for part in os.environ.get(variable, "").split(",") if part.strip()}


def _as_int(value: Any) -> int | None:
    try:
        return int(str(value).strip())
    except ValueError:
        return None


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    rule = _PROTECTED.get((case.method.upper(), case.operation.path))
    if rule is None or not case.path_parameters:
        return
    name, variable = rule
    if _as_int(case.path_parameters.get(name)) in _ids(variable):
        case.path_parameters[name] = UNUSED_ID
