"""What engines say about their context: vLLM/SGLang model lists, llama.cpp's /props."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from maasbase.gateway.testing import listening_socket
from maasbase.worker.serving.context_probe import engine_context, from_models_list, from_props


def test_models_list_gives_the_smallest_max_model_len() -> None:
    data = {"data": [{"id": "a", "max_model_len": 32768}, {"id": "b", "max_model_len": 8192}]}
    assert from_models_list(data) == 8192
    assert from_models_list({"data": [{"id": "a", "meta": {"n_ctx_train": 8192}}]}) is None
    assert from_models_list({"data": [{"max_model_len": 0}, {"max_model_len": True}]}) is None
    assert from_models_list(["not", "a", "list"]) is None


def test_props_give_a_slots_context() -> None:
    assert from_props({"default_generation_settings": {"n_ctx": 2048}, "total_slots": 4}) == 2048
    assert from_props({"n_ctx": 4096}) == 4096
    assert from_props({"default_generation_settings": {"n_ctx": -1}}) is None
    assert from_props(None) is None


@pytest.fixture
async def engine() -> AsyncIterator[tuple[str, dict[str, object]]]:
    """A stub engine whose answers the test sets: path -> JSON body (absent: 404)."""
    answers: dict[str, object] = {}

    async def handle(request: web.Request) -> web.Response:
        if request.path not in answers:
            return web.Response(status=404)
        return web.Response(text=json.dumps(answers[request.path]), content_type="application/json")

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    sock = listening_socket()
    site = web.SockSite(runner, sock)
    await site.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", answers
    finally:
        await runner.cleanup()


async def test_engine_context_asks_the_engine(engine: tuple[str, dict[str, object]]) -> None:
    url, answers = engine
    assert await engine_context(url) is None  # says nothing
    answers["/props"] = {"default_generation_settings": {"n_ctx": 512}}
    assert await engine_context(url) == 512  # llama.cpp
    answers["/v1/models"] = {"data": [{"id": "m", "max_model_len": 4096}]}
    assert await engine_context(url) == 4096  # vLLM, SGLang


async def test_engine_context_of_an_engine_that_is_gone() -> None:
    sock = listening_socket()
    port = sock.getsockname()[1]
    sock.close()
    assert await asyncio.wait_for(engine_context(f"http://127.0.0.1:{port}"), 10) is None
