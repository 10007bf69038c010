"""Hugging Face BERT checkpoints to GGUF, so llama.cpp serves them as embedding models.

llama.cpp loads only GGUF. A sentence-transformers or ``transformers`` BERT folder
(``config.json``, ``*.safetensors``, a WordPiece vocabulary) is converted with ``gguf``
and ``numpy`` alone into the file llama.cpp's ``convert_hf_to_gguf.py`` writes for
``BertModel`` at its default ``f16`` output: architecture ``bert``, the same keys, the
vocabulary in llama.cpp's phantom-space form, special tokens and pooling from the
folder's files, norms, biases, position and token type embeddings in F32, other
matrices in F16. ``prepare_for_backend`` converts once into a cache folder for serving.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import struct
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import gguf
import numpy as np
import numpy.typing as npt

from .errors import InvalidModelSource

logger = logging.getLogger(__name__)

LLAMA_CPP = "llama.cpp"
BERT_ARCHITECTURES = frozenset({"BertModel", "BertForMaskedLM"})
# Part of the cache file name: a new value makes earlier conversions stale.
CONVERTER_VERSION = 1
MAX_HEADER_BYTES = 100 * 1024 * 1024

OutType = Literal["f16", "f32"]
FloatArray = npt.NDArray[np.float32]

_DTYPES: dict[str, type[np.generic]] = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16}
# Tensors a BERT embedding model does not use (pooler, masked-LM and NSP heads).
_SKIPPED = re.compile(
    r"^(embeddings\.position_ids|pooler\..*|cls\.(predictions|seq_relationship)\..*)$"
)
# Kept in F32 whatever the output type, as llama.cpp's converter does.
_ALWAYS_F32 = frozenset({"position_embd.weight", "token_types.weight"})
_POOLING = {
    "pooling_mode_mean_tokens": gguf.PoolingType.MEAN,
    "pooling_mode_cls_token": gguf.PoolingType.CLS,
    "pooling_mode_lasttoken": gguf.PoolingType.LAST,
}


class ModelConversionError(InvalidModelSource):
    """A model folder that cannot be converted to GGUF as it is (permanent)."""

    code = "model_conversion_failed"


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelConversionError(f"cannot read {path}: {exc}") from exc


def _is_bert(config: Mapping[str, Any]) -> bool:
    architectures = config.get("architectures")
    if isinstance(architectures, list) and architectures:
        return any(a in BERT_ARCHITECTURES for a in architectures)
    return config.get("model_type") == "bert"


def needs_conversion(path: Path, backend: str) -> bool:
    """Whether ``path`` is a BERT checkpoint folder that ``backend`` (llama.cpp) cannot load.

    True for a folder with a BERT-family ``config.json`` (``BertModel``,
    ``BertForMaskedLM``, sentence-transformers BERT models) and no ``.gguf`` file,
    served by llama.cpp. Other engines load such folders themselves.
    """
    if backend.strip().lower() != LLAMA_CPP or not path.is_dir():
        return False
    config_path = path / "config.json"
    if not config_path.is_file() or any(path.glob("*.gguf")):
        return False
    try:
        config = _read_json(config_path)
    except ModelConversionError:
        return False
    return isinstance(config, dict) and _is_bert(config)


def _safetensors_files(folder: Path) -> list[Path]:
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ModelConversionError(
            f"{folder} has no .safetensors weights; GGUF conversion reads safetensors only. "
            "Save the model with safe_serialization=True or provide a GGUF file."
        )
    return files


def _iter_safetensors(path: Path) -> Iterator[tuple[str, FloatArray]]:
    """(name, float32 array) of each floating-point tensor in one safetensors file."""
    with path.open("rb") as handle:
        prefix = handle.read(8)
        if len(prefix) != 8:
            raise ModelConversionError(f"{path} is not a safetensors file (too short)")
        (length,) = struct.unpack("<Q", prefix)
        if length > MAX_HEADER_BYTES:
            raise ModelConversionError(f"{path} has an implausible safetensors header")
        try:
            header: dict[str, Any] = json.loads(handle.read(length))
        except ValueError as exc:
            raise ModelConversionError(f"{path} has a corrupt safetensors header") from exc
        base = 8 + length
        header.pop("__metadata__", None)
        for name, info in sorted(header.items()):  # safetensors' own key order
            dtype = _DTYPES.get(info["dtype"])
            if dtype is None:
                if _SKIPPED.match(_canonical(name)):
                    continue
                raise ModelConversionError(f"{path}: tensor {name} has unsupported dtype")
            start, end = (int(x) for x in info["data_offsets"])
            handle.seek(base + start)
            raw = handle.read(end - start)
            if len(raw) != end - start:
                raise ModelConversionError(f"{path} is truncated (tensor {name})")
            data = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<"))
            if info["dtype"] == "BF16":
                array = (data.astype(np.uint32) << 16).view(np.float32)
            else:
                array = data.astype(np.float32)
            yield name, array.reshape([int(d) for d in info["shape"]])


def _special_names(folder: Path) -> dict[str, str]:
    """Special tokens by kind ("unk", "sep", ...) from the tokenizer's own config files."""
    config: dict[str, Any] = {}
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        if (folder / name).is_file():
            loaded = _read_json(folder / name)
            config.update(loaded if isinstance(loaded, dict) else {})
    names = {}
    for kind in ("unk", "sep", "pad", "cls", "mask"):
        value = config.get(f"{kind}_token")
        token = value.get("content") if isinstance(value, dict) else value
        if isinstance(token, str):
            names[kind] = token
    return names


def _wordpiece_vocab(folder: Path) -> tuple[dict[str, int], dict[int, bool]]:
    """(token -> id, added token id -> special) from tokenizer.json or vocab.txt."""
    tokenizer_json = folder / "tokenizer.json"
    if tokenizer_json.is_file():
        data = _read_json(tokenizer_json)
        model = data.get("model") or {}
        if model.get("type") != "WordPiece" or not isinstance(model.get("vocab"), dict):
            raise ModelConversionError(
                f"{tokenizer_json} is not a WordPiece tokenizer; only BERT WordPiece "
                "vocabularies are converted"
            )
        vocab = {str(k): int(v) for k, v in model["vocab"].items()}
        added = {}
        for entry in data.get("added_tokens") or []:
            vocab[str(entry["content"])] = int(entry["id"])
            added[int(entry["id"])] = bool(entry.get("special"))
        return vocab, added
    vocab_txt = folder / "vocab.txt"
    if not vocab_txt.is_file():
        raise ModelConversionError(f"{folder} has neither tokenizer.json nor vocab.txt")
    lines = vocab_txt.read_text(encoding="utf-8").splitlines()
    vocab = {line: i for i, line in enumerate(lines)}
    # A slow BERT tokenizer registers its configured special tokens as special.
    added = {vocab[t]: True for t in _special_names(folder).values() if t in vocab}
    return vocab, added


def _phantom(token: str, token_type: int) -> str:
    """llama.cpp's WordPiece form: word starts get "▁", "##" continuations lose it."""
    if token_type == gguf.TokenType.CONTROL:
        return token
    if token.startswith("##"):
        return token[2:]
    return "\u2581" + token


def bert_vocabulary(folder: Path, vocab_size: int) -> tuple[list[str], list[int]]:
    """Tokens (in phantom-space form) and token types for ids ``0..vocab_size-1``."""
    vocab, added = _wordpiece_vocab(folder)
    by_id = {i: token for token, i in vocab.items()}
    if by_id and max(by_id) >= vocab_size:
        raise ModelConversionError(
            f"{folder}: the tokenizer has ids up to {max(by_id)} but config.json declares "
            f"vocab_size={vocab_size}"
        )
    tokens: list[str] = []
    types: list[int] = []
    for i in range(vocab_size):
        token = by_id.get(i)
        if token is None:
            token, kind = f"[PAD{i}]", gguf.TokenType.USER_DEFINED
        elif i in added:
            special = added[i] or (token.startswith("<|") and token.endswith("|>"))
            kind = gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED
        else:
            kind = gguf.TokenType.NORMAL
        tokens.append(_phantom(token, kind))
        types.append(int(kind))
    return tokens, types


def pooling_type(folder: Path) -> gguf.PoolingType | None:
    """The sentence-transformers pooling named by ``modules.json``, if any."""
    modules_path = folder / "modules.json"
    if not modules_path.is_file():
        return None
    modules = _read_json(modules_path)
    for module in modules if isinstance(modules, list) else []:
        if module.get("type") == "sentence_transformers.models.Pooling":
            config = _read_json(folder / str(module.get("path", "")) / "config.json")
            for key, kind in _POOLING.items():
                if config.get(key):
                    return kind
            raise ModelConversionError(
                f"{folder}: only mean, CLS and last-token pooling can be served by llama.cpp"
            )
    return None


def _canonical(name: str) -> str:
    """The ``BertModel`` name of a tensor saved by another BERT class or an old version."""
    name = name.removeprefix("bert.")
    if name.endswith(".gamma"):
        return name[: -len(".gamma")] + ".weight"
    if name.endswith(".beta"):
        return name[: -len(".beta")] + ".bias"
    return name


def _special_vocab(folder: Path, tokens: list[str]) -> gguf.SpecialVocab:
    """Special token ids and BOS/EOS flags, as ``gguf.SpecialVocab`` reads them.

    Without a ``tokenizer.json`` it finds no ids; the configured tokens are then looked
    up in the vocabulary, with BERT's framing: ``[CLS]`` as BOS and ``[SEP]`` as EOS.
    """
    special = gguf.SpecialVocab(folder, n_vocab=len(tokens))
    ids = special.special_token_ids
    # llama.cpp reads no CLS id (BOS is the CLS token) and gguf has no key for it.
    ids.pop("cls", None)
    if not (folder / "tokenizer.json").is_file():
        index = {token: i for i, token in enumerate(tokens)}
        names = _special_names(folder)
        for kind, name in (("bos", "cls"), ("eos", "sep"), *((k, k) for k in names)):
            if kind != "cls" and name in names and names[name] in index:
                ids.setdefault(kind, index[names[name]])
        if "bos" in ids and "eos" in ids:
            special.add_special_token.setdefault("bos", True)
            special.add_special_token.setdefault("eos", True)
    return special


def _gguf_name(tensor_map: gguf.TensorNameMap, name: str) -> str | None:
    name = _canonical(name)
    if _SKIPPED.match(name):
        return None
    mapped = tensor_map.get_name(name, try_suffixes=(".weight", ".bias"))
    if mapped is None:
        raise ModelConversionError(f"tensor {name!r} has no llama.cpp BERT equivalent")
    return mapped


def _stored(name: str, data: FloatArray, outtype: OutType) -> npt.NDArray[Any]:
    as_f32 = (
        outtype == "f32"
        or data.ndim <= 1
        or name.endswith("_norm.weight")
        or not name.endswith(".weight")
        or name in _ALWAYS_F32
    )
    return data if as_f32 else data.astype(np.float16)


def _hparam(config: Mapping[str, Any], *keys: str) -> Any:
    for key in keys:
        if key in config:
            return config[key]
    raise ModelConversionError(f"config.json lacks {' / '.join(keys)}")


def _write(writer: gguf.GGUFWriter, folder: Path, outtype: OutType) -> None:
    config = _read_json(folder / "config.json")
    if not isinstance(config, dict) or not _is_bert(config):
        raise ModelConversionError(f"{folder}/config.json does not describe a BERT model")
    if config.get("position_embedding_type", "absolute") != "absolute":
        raise ModelConversionError("llama.cpp's BERT supports absolute position embeddings only")
    blocks = int(_hparam(config, "num_hidden_layers", "n_layer"))
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(folder.name)
    writer.add_block_count(blocks)
    writer.add_context_length(int(_hparam(config, "max_position_embeddings", "n_ctx")))
    writer.add_embedding_length(int(_hparam(config, "hidden_size", "n_embd")))
    writer.add_feed_forward_length(int(_hparam(config, "intermediate_size", "n_inner")))
    writer.add_head_count(int(_hparam(config, "num_attention_heads", "n_head")))
    writer.add_layer_norm_eps(float(_hparam(config, "layer_norm_eps", "layer_norm_epsilon")))
    file_type = gguf.LlamaFileType.ALL_F32 if outtype == "f32" else gguf.LlamaFileType.MOSTLY_F16
    writer.add_file_type(file_type)
    writer.add_causal_attention(False)
    if (pooling := pooling_type(folder)) is not None:
        writer.add_pooling_type(pooling)

    tokens, types = bert_vocabulary(folder, int(_hparam(config, "vocab_size")))
    writer.add_token_type_count(int(config.get("type_vocab_size", 1)))
    writer.add_tokenizer_model("bert")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    _special_vocab(folder, tokens).add_to_gguf(writer, quiet=True)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)

    tensor_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH.BERT, blocks)
    for path in _safetensors_files(folder):
        for name, data in _iter_safetensors(path):
            if (gguf_name := _gguf_name(tensor_map, name)) is not None:
                writer.add_tensor(gguf_name, _stored(gguf_name, data, outtype))


def convert_bert_to_gguf(folder: Path, out: Path, *, outtype: OutType = "f16") -> Path:
    """Write ``folder``'s BERT model as a llama.cpp GGUF at ``out`` and return ``out``.

    The file appears atomically: it is written next to ``out`` under a ``.tmp`` name
    and renamed when complete. Raises ``ModelConversionError`` for folders that are not
    convertible (not BERT, no safetensors, no WordPiece vocabulary).
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    writer = gguf.GGUFWriter(tmp, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.BERT])
    try:
        try:
            _write(writer, folder, outtype)
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_tensors_to_file()
        finally:
            writer.close()
        tmp.replace(out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out


def _fingerprint(folder: Path) -> str:
    """A digest of the folder's files (name, size, modification time) one level deep."""
    digest = hashlib.sha256(f"v{CONVERTER_VERSION}".encode())
    files = [p for p in folder.iterdir() if p.is_file()]
    files += [p for p in folder.glob("*/config.json") if p.is_file()]
    for path in sorted(files):
        stat = path.stat()
        rel = path.relative_to(folder).as_posix()
        digest.update(f"\0{rel}\0{stat.st_size}\0{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]  # prepare_for_backend's glob expects 16 hex digits


def cache_file_stem(folder: Path) -> str:
    """``<folder name>-<hash of its absolute path>``: one stem per source folder."""
    resolved = folder.resolve()
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", resolved.name).strip("-.") or "model"
    return f"{slug}-{hashlib.sha256(str(resolved).encode()).hexdigest()[:12]}"


def prepare_for_backend(path: Path, backend: str, cache_dir: Path) -> Path:
    """The path ``backend`` should load for ``path``.

    ``path`` itself unless ``needs_conversion``; otherwise a GGUF in ``cache_dir``
    named after the source folder and a fingerprint of its files, converted on first
    use and reused while the source files keep their size and modification time.
    Older conversions of the same folder are removed.
    """
    if not needs_conversion(path, backend):
        return path
    stem = cache_file_stem(path)
    target = cache_dir / f"{stem}-{_fingerprint(path)}.gguf"
    if target.is_file():
        return target
    logger.info("converting %s to GGUF at %s", path, target)
    convert_bert_to_gguf(path, target)
    for stale in cache_dir.glob(f"{stem}-{'[0-9a-f]' * 16}.gguf"):
        if stale != target:
            with contextlib.suppress(OSError):
                stale.unlink()
    return target
