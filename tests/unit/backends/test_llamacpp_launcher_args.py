"""The embedded llama.cpp launcher accepts llama-server's flags and maps them."""

from __future__ import annotations

from typing import Any

import pytest
import xllamacpp  # type: ignore[import-untyped]

from maasbase.backends.llamacpp_launcher import build_params, build_parser


def params_for(*argv: str) -> Any:
    return build_params(build_parser().parse_args(["-m", "/m.gguf", *argv]))


def test_flags_map_onto_the_server_parameters() -> None:
    params = params_for(
        "--host",
        "0.0.0.0",
        "--port",
        "9001",
        "--alias",
        "tiny,tiny-chat",
        "-c",
        "2048",
        "-np",
        "3",
        "-ngl",
        "0",
        "-t",
        "2",
        "--metrics",
    )
    assert params.model.path == "/m.gguf"
    assert params.hostnames == ["0.0.0.0"]
    assert params.port == 9001
    assert params.model_alias == {"tiny", "tiny-chat"}
    assert params.n_ctx == 2048
    assert params.n_parallel == 3
    assert params.n_gpu_layers == 0
    assert params.cpuparams.n_threads == 2
    assert params.endpoint_metrics is True


def test_long_names_and_embedding_options() -> None:
    params = params_for(
        "--ctx-size",
        "512",
        "--parallel",
        "2",
        "--gpu-layers",
        "all",
        "--embeddings",
        "--pooling",
        "mean",
    )
    assert params.n_ctx == 512
    assert params.n_parallel == 2
    assert params.n_gpu_layers == 999
    assert params.embedding is True
    assert params.pooling_type == xllamacpp.llama_pooling_type.LLAMA_POOLING_TYPE_MEAN
    assert params.endpoint_metrics is False


def test_reranking_implies_embeddings_with_rank_pooling() -> None:
    params = params_for("--reranking")
    assert params.embedding is True
    assert params.pooling_type == xllamacpp.llama_pooling_type.LLAMA_POOLING_TYPE_RANK


@pytest.mark.parametrize("argv", [["--bogus"], ["-ngl", "many"], ["--pooling", "max"], []])
def test_bad_command_lines_exit_2_with_usage(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    full = argv if not argv else ["-m", "/m.gguf", *argv]
    with pytest.raises(SystemExit) as caught:
        build_parser().parse_args(full)
    assert caught.value.code == 2
    assert "usage:" in capsys.readouterr().err
