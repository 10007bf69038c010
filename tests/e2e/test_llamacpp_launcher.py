"""llama.cpp really serving on CPU: the built-in definition's command line, run by
the embedded launcher, on a tiny random-weights GGUF."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from maasbase.backends.launch import LaunchContext, LaunchSpec, build_launch_spec
from maasbase.backends.registry import BackendRegistry
from tests.support.processes import free_port, wait_until
from tests.support.tiny_gguf import write_tiny_gguf

pytestmark = pytest.mark.e2e

MODEL_NAME = "tiny-llama"
MESSAGES = [{"role": "user", "content": "Say hello."}]


@dataclass
class Served:
    proc: subprocess.Popen[bytes]
    spec: LaunchSpec
    log: Path

    @property
    def base(self) -> str:
        return self.spec.local_url()

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.TransportError:
        return False


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf")


@contextmanager
def serving(context: LaunchContext, log: Path) -> Iterator[Served]:
    """Run the llama.cpp built-in definition's command until the block ends."""
    definition = BackendRegistry.default().get("llama.cpp")
    # No llama-server binary: the definition falls back to the embedded launcher.
    spec = build_launch_spec(definition, context, which=lambda _: None)
    assert spec.argv[1:3] == ["-m", "maasbase.backends.llamacpp_launcher"]
    with log.open("wb") as handle:
        proc = subprocess.Popen(
            spec.argv, env={**os.environ, **spec.env}, stdout=handle, stderr=subprocess.STDOUT
        )
    server = Served(proc, spec, log)
    try:
        wait_until(
            lambda: proc.poll() is not None or _healthy(spec.local_url(spec.health_path)),
            timeout=60,
            what="llama.cpp /health",
        )
        assert proc.poll() is None, f"launcher exited early:\n{server.log_tail()}"
        yield server
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def _context(model: Path, **overrides: Any) -> LaunchContext:
    values: dict[str, Any] = {
        "model_path": str(model),
        "model_name": MODEL_NAME,
        "host": "127.0.0.1",
        "port": free_port(),
        "context_length": 1024,
        "backend_parameters": ["-np", "2", "-t", "2"],
    }
    return LaunchContext(**(values | overrides))


@pytest.fixture(scope="module")
def served(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serving(_context(tiny_model), tmp_path_factory.mktemp("logs") / "chat.log") as server:
        yield server


def test_chat_completion_is_well_formed(served: Served) -> None:
    response = httpx.post(
        f"{served.base}/v1/chat/completions",
        json={"model": MODEL_NAME, "messages": MESSAGES, "max_tokens": 16},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["model"] == MODEL_NAME
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert isinstance(choice["message"]["content"], str)
    assert choice["finish_reason"] in ("length", "stop")
    usage = body["usage"]
    assert usage["prompt_tokens"] > 0
    assert 0 < usage["completion_tokens"] <= 16
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_streamed_chat_completion_ends_with_usage_and_done(served: Served) -> None:
    events: list[str] = []
    with httpx.stream(
        "POST",
        f"{served.base}/v1/chat/completions",
        json={
            "model": MODEL_NAME,
            "messages": MESSAGES,
            "max_tokens": 12,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
        timeout=30,
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [
            line[len("data: ") :] for line in response.iter_lines() if line.startswith("data: ")
        ]
    assert events[-1] == "[DONE]"
    chunks: list[dict[str, Any]] = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    text = "".join(choice["delta"].get("content") or "" for c in chunks for choice in c["choices"])
    assert text
    usage = chunks[-1]["usage"]
    assert usage["prompt_tokens"] > 0
    assert 0 < usage["completion_tokens"] <= 12


def test_parallel_requests_are_served_together(served: Served) -> None:
    def ask(_: int) -> int:
        return httpx.post(
            f"{served.base}/v1/chat/completions",
            json={"model": MODEL_NAME, "messages": MESSAGES, "max_tokens": 8},
            timeout=30,
        ).status_code

    with ThreadPoolExecutor(max_workers=4) as pool:
        assert list(pool.map(ask, range(4))) == [200, 200, 200, 200]


def test_models_and_metrics_endpoints(served: Served) -> None:
    models = httpx.get(f"{served.base}/v1/models", timeout=10).json()
    assert MODEL_NAME in [m["id"] for m in models["data"]]

    assert served.spec.metrics_path == "/metrics"
    response = httpx.get(f"{served.base}{served.spec.metrics_path}", timeout=10)
    assert response.status_code == 200
    samples = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in response.text.splitlines()
        if line and not line.startswith("#")
    }
    for name in (
        "llamacpp:requests_processing",
        "llamacpp:requests_deferred",
        "llamacpp:prompt_tokens_total",
        "llamacpp:tokens_predicted_total",
    ):
        assert name in samples, f"{name} missing from /metrics"
    assert samples["llamacpp:prompt_tokens_total"] > 0


def test_embedding_model_serves_vectors(tiny_model: Path, tmp_path: Path) -> None:
    # The tiny GGUF declares no pooling type, so the deployment names one.
    context = _context(
        tiny_model,
        model_name="tiny-embed",
        category="embedding",
        backend_parameters=["--pooling", "mean"],
    )
    with serving(context, tmp_path / "embed.log") as server:
        assert "--embedding" in server.spec.args
        assert server.spec.args[-2:] == ["--pooling", "mean"]
        response = httpx.post(
            f"{server.base}/v1/embeddings",
            json={"model": "tiny-embed", "input": ["hello world", "goodbye"]},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert [item["index"] for item in body["data"]] == [0, 1]
        assert all(len(item["embedding"]) == 64 for item in body["data"])
        assert body["usage"]["prompt_tokens"] > 0


def test_sigterm_stops_the_server_quickly_and_cleanly(served: Served) -> None:
    started = time.monotonic()
    served.proc.send_signal(signal.SIGTERM)
    try:
        code = served.proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pytest.fail(f"launcher still running 5 s after SIGTERM:\n{served.log_tail()}")
    assert code == 0, served.log_tail()
    assert time.monotonic() - started < 5
    assert "stopping llama.cpp server" in served.log_tail()
