"""API fuzzing in CI: schemathesis against the live OpenAPI schema of a real server.

Once with an admin's API key and once with a user's: no response may be a 5xx, and
every response must match the schema (status code documented, body and headers as
declared). Kept short for CI: the random and stateful phases only, with
``MAAS_FUZZ_EXAMPLES`` examples per operation (default 8); ``bench/api_fuzz.py`` adds
the boundary-value (coverage) phase and runs longer. The cases the fuzzer found once
are pinned as plain tests in ``test_input_bounds``.
"""

from __future__ import annotations

import os

import httpx
import pytest

from tests.integration.conftest import ADMIN_PASSWORD, Harness
from tests.support.api_fuzz import principals, run_schemathesis, serve

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
@pytest.mark.parametrize("who", ["admin", "user"])
async def test_fuzzing_finds_no_server_error_and_no_schema_mismatch(
    harness: Harness, who: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Model evaluations read model metadata from a hub: point it at a closed local port.
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("MODELSCOPE_DOMAIN", "http://127.0.0.1:9")
    async with serve(harness.app) as base_url:
        principal = (await principals(base_url, ADMIN_PASSWORD))[who]
        result = await run_schemathesis(
            base_url,
            principal,
            max_examples=int(os.environ.get("MAAS_FUZZ_EXAMPLES", "8")),
            phases="fuzzing,stateful",
        )
        print(result.summary)
        assert result.returncode == 0, result.output[-20_000:]
        # The fuzzer's own credential survived the run (so every operation was reached).
        async with httpx.AsyncClient(base_url=base_url) as client:
            me = await client.get(
                "/api/v1/users/me", headers={"Authorization": f"Bearer {principal.token}"}
            )
        assert me.status_code == 200, me.text
