"""GGUF header reading against files generated with the ``gguf`` package."""

from __future__ import annotations

from pathlib import Path

import gguf
import pytest

from maasbase.common.errors import InvalidRequest
from maasbase.server.estimate import (
    HeaderIncomplete,
    ModelFileNotFound,
    ModelFormatError,
    gguf_metadata,
    parse_gguf_header,
    read_gguf_header,
    read_gguf_metadata,
)
from maasbase.server.estimate.gguf_reader import (
    GGUFArray,
    read_gguf_header_with_reader,
    split_shard_names,
)
from tests.support.model_files import LLAMA3_70B, write_sparse_llama_gguf, write_tiny_gguf

# Byte sizes of the tiny model (2 layers, hidden 64, 4 heads, 2 KV heads of 16, ffn 128,
# vocab 256), worked out by hand from GGML block sizes:
# Q8_0 = 34 bytes per 32 values, Q4_0 = 18 bytes per 32 values, F16 = 2 B, F32 = 4 B.
TOKEN_EMBD = 256 * 64 * 2  # F16
NORM = 64 * 4  # F32
ATTN_Q = 64 * 64 // 32 * 34  # Q8_0: 4352
ATTN_KV = 32 * 64 // 32 * 34  # Q8_0, 2 KV heads × 16 = 32 rows: 2176
FFN = 128 * 64 // 32 * 18  # Q4_0: 4608
LAYER = NORM + ATTN_Q + 2 * ATTN_KV + ATTN_Q + NORM + 3 * FFN  # 27392
OUTPUT = 256 * 64 // 32 * 34  # Q8_0: 17408
TINY_WEIGHT_BYTES = TOKEN_EMBD + 2 * LAYER + NORM + OUTPUT  # 105216


@pytest.fixture
def tiny_gguf(tmp_path: Path) -> Path:
    return write_tiny_gguf(tmp_path / "tiny.gguf")


def test_tiny_gguf_metadata_matches_hand_computed_figures(tiny_gguf: Path) -> None:
    meta = read_gguf_metadata(tiny_gguf)

    assert TINY_WEIGHT_BYTES == 105216
    assert meta.weight_bytes == TINY_WEIGHT_BYTES
    assert meta.architecture == "llama"
    assert (meta.num_layers, meta.num_attention_heads, meta.num_kv_heads) == (2, 4, 2)
    assert (meta.head_dim, meta.hidden_size, meta.intermediate_size) == (16, 64, 128)
    assert meta.max_context == 512
    assert meta.vocab_size == 256  # from the tokenizer's token list
    assert meta.dtype == "Q8_0"  # general.file_type
    assert not meta.is_embedding
    assert meta.has_kv_cache
    assert meta.source_format == "gguf"


def test_quantised_tensor_sizes_come_from_ggml_block_sizes(tiny_gguf: Path) -> None:
    sizes = {t.name: (t.ggml_type, t.n_bytes) for t in read_gguf_header(tiny_gguf).tensors}

    assert sizes["blk.0.attn_q.weight"] == (gguf.GGMLQuantizationType.Q8_0, 4352)
    assert sizes["blk.0.ffn_down.weight"] == (gguf.GGMLQuantizationType.Q4_0, 4608)
    assert sizes["token_embd.weight"] == (gguf.GGMLQuantizationType.F16, 32768)
    assert sizes["blk.1.ffn_norm.weight"] == (gguf.GGMLQuantizationType.F32, 256)


def test_bytes_prefix_local_file_and_gguf_reader_agree(tiny_gguf: Path) -> None:
    reference = read_gguf_header_with_reader(tiny_gguf)
    prefix = tiny_gguf.read_bytes()[: reference.data_offset]

    assert read_gguf_header(tiny_gguf) == reference
    assert parse_gguf_header(prefix) == reference
    assert gguf_metadata([parse_gguf_header(prefix)]) == read_gguf_metadata(tiny_gguf)


def test_large_tokenizer_arrays_keep_only_their_length(tmp_path: Path) -> None:
    merges = [f"a{i} b{i}" for i in range(5000)]
    path = write_tiny_gguf(
        tmp_path / "vocab.gguf", vocab=6000, extra={"tokenizer.ggml.merges": merges}
    )

    header = read_gguf_header(path)

    assert header == read_gguf_header_with_reader(path)
    assert header.fields["tokenizer.ggml.tokens"] == GGUFArray(8, 6000, None)  # 8 = STRING
    assert header.fields["tokenizer.ggml.merges"] == GGUFArray(8, 5000, None)
    assert read_gguf_metadata(path).vocab_size == 6000


def test_a_prefix_that_stops_inside_the_header_asks_for_more(tiny_gguf: Path) -> None:
    data = tiny_gguf.read_bytes()

    with pytest.raises(HeaderIncomplete) as excinfo:
        parse_gguf_header(data[:300])

    assert excinfo.value.needed_bytes > 300
    assert isinstance(excinfo.value, InvalidRequest)


def test_file_type_label_falls_back_to_the_dominant_tensor_type(tmp_path: Path) -> None:
    path = write_tiny_gguf(tmp_path / "nolabel.gguf", file_type=None, ffn=512)

    # Q4_0 MLP: 2 layers × 3 × (512 × 64 / 32 × 18) = 110,592 bytes; Q8_0 attention and
    # head: 2 × (2 × 4352 + 2 × 2176) + 17408 = 43,520 bytes.
    assert read_gguf_metadata(path).dtype == "Q4_0"


def test_sparse_llama_70b_gguf_costs_no_disk_and_sizes_exactly(tmp_path: Path) -> None:
    path = write_sparse_llama_gguf(tmp_path / "llama-70b-q4_k_m.gguf", LLAMA3_70B)
    # Q4_K = 144 bytes per 256 values, Q6_K = 210 bytes per 256 values.
    linear_per_layer = 2 * 8192 * 8192 + 2 * 1024 * 8192 + 3 * 28672 * 8192  # 855,638,016
    layer = linear_per_layer // 256 * 144 + 2 * 8192 * 4
    embed = 128256 * 8192 // 256 * 144
    head = 128256 * 8192 // 256 * 210
    expected = 80 * layer + embed + head + 8192 * 4

    meta = read_gguf_metadata(path)

    assert read_gguf_header(path) == read_gguf_header_with_reader(path)
    assert expected == 39_961_870_336
    assert meta.weight_bytes == expected
    assert path.stat().st_size > expected
    assert path.stat().st_blocks * 512 < 1024 * 1024  # sparse: header pages only
    assert (meta.num_layers, meta.num_kv_heads, meta.head_dim, meta.vocab_size) == (
        80,
        8,
        128,
        128256,
    )
    assert meta.dtype == "Q4_K_M"
    with path.open("rb") as fh:
        assert gguf_metadata([parse_gguf_header(fh.read(1024 * 1024))]) == meta


def test_split_gguf_sums_the_tensors_of_every_shard(tmp_path: Path) -> None:
    write_tiny_gguf(tmp_path / "tiny.gguf", split_max_tensors=8)
    shards = sorted(p.name for p in tmp_path.glob("*.gguf"))

    assert shards == [f"tiny-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    meta = read_gguf_metadata(tmp_path / shards[1])
    assert meta.weight_bytes == TINY_WEIGHT_BYTES
    assert meta.num_layers == 2


def test_split_shard_names_keep_the_folder() -> None:
    assert split_shard_names("q4/m-00002-of-00002.gguf") == [
        "q4/m-00001-of-00002.gguf",
        "q4/m-00002-of-00002.gguf",
    ]
    assert split_shard_names("model.Q4_K_M.gguf") is None


def test_embedding_gguf_is_recognised_by_pooling_type(tmp_path: Path) -> None:
    path = write_tiny_gguf(
        tmp_path / "embed.gguf", extra={"llama.pooling_type": int(gguf.PoolingType.MEAN)}
    )

    meta = read_gguf_metadata(path)

    assert meta.is_embedding
    assert meta.has_kv_cache  # a decoder used for embeddings still caches K/V


def test_bert_gguf_is_an_encoder_without_kv_cache(tmp_path: Path) -> None:
    meta = read_gguf_metadata(write_tiny_gguf(tmp_path / "bert.gguf", arch="bert"))

    assert meta.is_embedding
    assert not meta.has_kv_cache


def test_per_layer_kv_heads_and_distinct_key_value_lengths(tmp_path: Path) -> None:
    path = write_tiny_gguf(
        tmp_path / "hybrid.gguf",
        extra={
            "llama.attention.head_count_kv": [2, 0],
            "llama.attention.key_length": 24,
            "llama.attention.value_length": 16,
            "llama.attention.sliding_window": 128,
        },
    )

    meta = read_gguf_metadata(path)

    assert meta.layer_kv_heads == (2, 0)
    assert meta.kv_heads_by_layer == (2, 0)
    assert (meta.head_dim, meta.v_head_dim) == (24, 16)
    assert meta.sliding_window == 128


def test_not_a_gguf_file_is_a_format_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.gguf"
    path.write_bytes(b"GGML" + b"\0" * 64)

    with pytest.raises(ModelFormatError):
        read_gguf_header_with_reader(path)
    with pytest.raises(ModelFormatError, match="magic"):
        read_gguf_header(path)
    with pytest.raises(ModelFormatError, match="magic"):
        parse_gguf_header(path.read_bytes())


def test_local_file_cut_inside_its_header_is_a_format_error(tiny_gguf: Path) -> None:
    cut = tiny_gguf.with_name("cut.gguf")
    cut.write_bytes(tiny_gguf.read_bytes()[:1000])

    with pytest.raises(ModelFormatError, match="ends inside its GGUF header"):
        read_gguf_metadata(cut)


def test_missing_gguf_file_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(ModelFileNotFound):
        read_gguf_metadata(tmp_path / "absent.gguf")


def test_gguf_without_model_keys_says_what_is_missing(tmp_path: Path) -> None:
    path = tmp_path / "kv-only.gguf"
    writer = gguf.GGUFWriter(path, "clip")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()

    with pytest.raises(ModelFormatError, match=r"clip\.block_count"):
        read_gguf_metadata(path)
