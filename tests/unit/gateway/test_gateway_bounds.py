"""The bounds the gateway keeps on what it quotes and what it accepts, without a server."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from maasbase.gateway.app import OTHER_BODY_BYTES, create_gateway_app
from maasbase.gateway.config import GatewayConfig
from maasbase.gateway.errors import ECHO_CHARS, MESSAGE_CHARS, ModelNotFound, clip, openai_error
from maasbase.gateway.fakes import FakeKeyResolver, FakeRoutingSource, MemoryUsageSink
from maasbase.gateway.fakes import routing_table as table


@given(st.text(max_size=400))
def test_clip_keeps_short_text_and_bounds_the_rest(text: str) -> None:
    clipped = clip(text)
    assert len(clipped) <= ECHO_CHARS
    if len(text) <= ECHO_CHARS:
        assert clipped == text
    else:
        assert clipped == text[: ECHO_CHARS - 1] + "\u2026"


def test_error_answers_bound_their_message() -> None:
    _, _, body = openai_error(ModelNotFound("x" * 100_000))
    message = json.loads(body)["error"]["message"]
    assert len(message) == MESSAGE_CHARS
    assert message.endswith("\u2026")


def test_request_bodies_are_limited_per_route() -> None:
    config = GatewayConfig(max_body_bytes=64 << 20, max_json_body_bytes=16 << 20)
    app = create_gateway_app(
        routes=FakeRoutingSource(table("1", {})),
        keys=FakeKeyResolver({}),
        usage=MemoryUsageSink(),
        config=config,
    )
    assert app.body_limit("POST", "/v1/chat/completions") == 16 << 20
    assert app.body_limit("POST", "/v1/chat/completions/") == 16 << 20
    assert app.body_limit("POST", "/v1/messages") == 16 << 20
    assert app.body_limit("POST", "/v1/audio/transcriptions") == 64 << 20
    assert app.body_limit("GET", "/v1/models") == 0
    assert app.body_limit("GET", "/v1/models/some/model") == 0
    assert app.body_limit("HEAD", "/healthz") == 0
    assert app.body_limit("POST", "/v1/no-such-endpoint") == OTHER_BODY_BYTES
    small = GatewayConfig(max_body_bytes=1000)  # the ceiling of every route
    app = create_gateway_app(
        routes=FakeRoutingSource(table("1", {})),
        keys=FakeKeyResolver({}),
        usage=MemoryUsageSink(),
        config=small,
    )
    assert app.body_limit("POST", "/v1/embeddings") == 1000
