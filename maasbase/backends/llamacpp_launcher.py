"""Run llama.cpp's HTTP server from the ``xllamacpp`` wheel, with llama-server's flags.

``python -m maasbase.backends.llamacpp_launcher -m MODEL --host H --port P ...``
serves chat, completions, embeddings, ``/health`` and ``/metrics`` with
continuous batching, exactly as ``llama-server`` does (it is the same C++
server, embedded in the wheel). Flags mirror llama-server's names, so one
backend definition drives either executable. The process serves until SIGTERM
or SIGINT, then shuts the server down and exits 0. Unknown flags exit 2 with
the usage text; a model that fails to load exits 1.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from collections.abc import Sequence
from types import FrameType
from typing import Any

logger = logging.getLogger("maasbase.backends.llamacpp_launcher")

POOLING = ("none", "mean", "cls", "last", "rank")
FLASH_ATTN = {"on": "ENABLED", "off": "DISABLED", "auto": "AUTO"}


def _gpu_layers(value: str) -> int:
    """llama-server accepts a count, ``all`` or ``auto``."""
    if value == "all":
        return 999
    if value == "auto":
        return -1
    try:
        return int(value)
    except ValueError as exc:
        message = f"expected a number, 'all' or 'auto', not {value!r}"
        raise argparse.ArgumentTypeError(message) from exc


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m maasbase.backends.llamacpp_launcher",
        description="llama.cpp HTTP server (xllamacpp), with llama-server's flags.",
        allow_abbrev=False,
    )
    add = parser.add_argument
    add("-m", "--model", required=True, help="path of the GGUF model file")
    add("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    add("--port", type=int, default=8080, help="port to listen on (default: 8080)")
    add("-a", "--alias", help="model name(s) in API responses, comma-separated")
    add("-c", "--ctx-size", type=int, help="context size in tokens, shared by all slots")
    add("-np", "--parallel", type=int, help="number of parallel slots (requests)")
    add("-ngl", "--n-gpu-layers", "--gpu-layers", type=_gpu_layers, dest="n_gpu_layers")
    add("-t", "--threads", type=int, help="threads for generation")
    add("-tb", "--threads-batch", type=int, help="threads for prompt processing")
    add("--threads-http", type=int, help="threads of the HTTP server")
    add("-b", "--batch-size", type=int, help="logical batch size")
    add("-ub", "--ubatch-size", type=int, help="physical batch size")
    add("-n", "--n-predict", type=int, help="default most tokens to generate")
    add("--embedding", "--embeddings", action="store_true", help="serve embeddings only")
    add("--reranking", "--rerank", action="store_true", help="serve reranking")
    add("--pooling", choices=POOLING, help="pooling for embeddings")
    add("--metrics", action="store_true", help="expose Prometheus metrics at /metrics")
    add("--slots", action="store_true", help="expose slot states at /slots")
    add("-cb", "--cont-batching", action="store_true", default=None, dest="cont_batching")
    add("-nocb", "--no-cont-batching", action="store_false", dest="cont_batching")
    add("-fa", "--flash-attn", choices=sorted(FLASH_ATTN), help="flash attention")
    add("--jinja", action="store_true", default=None, help="use the model's Jinja template")
    add("--no-jinja", action="store_false", dest="jinja")
    add("--chat-template", help="chat template name or Jinja text")
    add("--api-key", action="append", help="API key clients must send (repeatable)")
    add("--no-webui", action="store_true", help="do not serve the web UI")
    add("-to", "--timeout", type=int, help="HTTP read/write timeout in seconds")
    add("-lv", "--verbosity", type=int, help="llama.cpp log verbosity")
    return parser


def _xllamacpp() -> Any:
    """The binding, imported only when a server is actually built."""
    import xllamacpp  # type: ignore[import-untyped]

    return xllamacpp


def build_params(args: argparse.Namespace) -> Any:
    """``xllamacpp.CommonParams`` for ``args``."""
    xllamacpp = _xllamacpp()
    params = xllamacpp.CommonParams()
    params.model.path = args.model
    params.hostnames = [args.host]  # a list: one address per entry
    params.port = args.port
    if args.alias:
        params.model_alias = {a.strip() for a in args.alias.split(",") if a.strip()}
    optional = {
        "n_ctx": args.ctx_size,
        "n_parallel": args.parallel,
        "n_gpu_layers": args.n_gpu_layers,
        "n_threads_http": args.threads_http,
        "n_batch": args.batch_size,
        "n_ubatch": args.ubatch_size,
        "n_predict": args.n_predict,
        "cont_batching": args.cont_batching,
        "use_jinja": args.jinja,
        "chat_template": args.chat_template,
        "verbosity": args.verbosity,
        "timeout_read": args.timeout,
        "timeout_write": args.timeout,
    }
    for name, value in optional.items():
        if value is not None:
            setattr(params, name, value)
    if args.threads is not None:
        params.cpuparams.n_threads = args.threads
    if args.threads_batch is not None:
        params.cpuparams_batch.n_threads = args.threads_batch
    pooling = args.pooling
    if args.reranking:
        pooling = "rank"
    if args.embedding or args.reranking:
        params.embedding = True
    if pooling is not None:
        params.pooling_type = getattr(
            xllamacpp.llama_pooling_type, f"LLAMA_POOLING_TYPE_{pooling.upper()}"
        )
    if args.flash_attn is not None:
        params.flash_attn_type = getattr(
            xllamacpp.llama_flash_attn_type, f"LLAMA_FLASH_ATTN_TYPE_{FLASH_ATTN[args.flash_attn]}"
        )
    params.endpoint_metrics = bool(args.metrics)
    params.endpoint_slots = bool(args.slots)
    if args.api_key:
        params.api_keys = list(args.api_key)
    if args.no_webui:
        params.ui = False
    return params


def serve(args: argparse.Namespace) -> int:
    """Load the model, serve until SIGTERM/SIGINT, shut down. Returns the exit status.

    Loading runs inside the binding without releasing the GIL, so Python signal
    handlers could not run until it finished: while loading, both signals keep
    their default action and end the process at once (there is nothing to clean
    up yet). Once serving, they trigger an orderly shutdown.
    """
    xllamacpp = _xllamacpp()
    params = build_params(args)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    started = time.monotonic()
    try:
        server = xllamacpp.Server(params)
    except Exception as exc:  # the binding raises plain RuntimeError/ValueError
        logger.error("llama.cpp server failed to start with %s: %s", args.model, exc)
        return 1
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        logger.info("received %s", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    logger.info(
        "llama.cpp server ready at %s in %.2fs",
        server.listening_address,
        time.monotonic() - started,
    )
    stop.wait()
    logger.info("stopping llama.cpp server")
    del server  # the destructor stops the HTTP loop and frees the model
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return serve(args)


if __name__ == "__main__":
    sys.exit(main())
