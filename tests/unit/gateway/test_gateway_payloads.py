"""Reading requests and engine answers: model, usage, SSE relay with usage stripping."""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from maasbase.common.errors import InvalidRequest
from maasbase.gateway.payloads import (
    SseEvents,
    SseUsage,
    affinity_text,
    fewest_tokens,
    multipart_boundary,
    multipart_field,
    parse_json_object,
    required_model,
    usage_from_json,
)


def event(payload: object) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


def chunk(text: str, finish: str | None = None) -> dict[str, object]:
    choice = {"index": 0, "delta": {"content": text}, "finish_reason": finish}
    return {"object": "chat.completion.chunk", "choices": [choice]}


USAGE = {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14}
STREAM = (
    event(chunk("Hel"))
    + event(chunk("lo"))
    + event(chunk("", "stop"))
    + event({"object": "chat.completion.chunk", "choices": [], "usage": USAGE})
    + b"data: [DONE]\n\n"
)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (json.dumps({"choices": [], "usage": USAGE}).encode(), (11, 3)),
        (b'{"usage": {"prompt_tokens": 4, "total_tokens": 4}, "data": []}', (4, 0)),
        (json.dumps({"usage": USAGE | {"prompt_tokens_details": {"cached": 2}}}).encode(), (11, 3)),
        (json.dumps({"content": 'the "usage" word', "usage": USAGE}).encode(), (11, 3)),
        (json.dumps({"usage": USAGE, "choices": [{"text": '"usage": 5'}]}).encode(), (11, 3)),
        (b'{"choices": []}', None),
        (b'{"usage": null}', None),
    ],
)
def test_usage_from_json_bodies(body: bytes, expected: tuple[int, int] | None) -> None:
    assert usage_from_json(body) == expected


def test_stream_usage_is_read_and_kept_when_the_client_asked() -> None:
    relay = SseUsage(strip=False)
    assert relay.feed(STREAM) + relay.finish() == STREAM
    assert relay.usage == (11, 3)


def test_stream_usage_is_stripped_when_only_the_gateway_asked() -> None:
    relay = SseUsage(strip=True)
    out = relay.feed(STREAM) + relay.finish()
    assert relay.usage == (11, 3)
    assert b"usage" not in out
    assert out == event(chunk("Hel")) + event(chunk("lo")) + event(chunk("", "stop")) + (
        b"data: [DONE]\n\n"
    )


def test_usage_on_a_content_chunk_is_removed_but_the_content_kept() -> None:
    mixed = event({**chunk("!", "stop"), "usage": USAGE})
    relay = SseUsage(strip=True)
    out = relay.feed(mixed)
    assert relay.usage == (11, 3)
    assert json.loads(out[6:]) == chunk("!", "stop")


@settings(max_examples=200, deadline=None)
@given(cuts=st.lists(st.integers(0, len(STREAM)), max_size=8), strip=st.booleans())
def test_relay_output_does_not_depend_on_how_the_stream_was_cut(
    cuts: list[int], strip: bool
) -> None:
    whole = SseUsage(strip=strip)
    expected = whole.feed(STREAM) + whole.finish()
    relay = SseUsage(strip=strip)
    out = b""
    bounds = [0, *sorted(cuts), len(STREAM)]
    for start, end in itertools.pairwise(bounds):
        out += relay.feed(STREAM[start:end])
    out += relay.finish()
    assert out == expected
    assert relay.usage == (11, 3)


def test_crlf_streams_and_event_splitting() -> None:
    events = SseEvents()
    crlf = STREAM.replace(b"\n", b"\r\n")
    payloads = events.feed(crlf[:50]) + events.feed(crlf[50:]) + events.finish()
    assert payloads[-1] == b"[DONE]"
    assert json.loads(payloads[3])["usage"] == USAGE


def test_request_bodies() -> None:
    assert required_model(parse_json_object(b'{"model": "m"}')) == "m"
    for bad in (b"", b"not json", b"[1, 2]"):
        with pytest.raises(InvalidRequest):
            parse_json_object(bad)
    with pytest.raises(InvalidRequest) as missing:
        required_model({"messages": []})
    assert missing.value.details == {"param": "model"}


def test_multipart_model_field() -> None:
    boundary = b"XyZ"
    body = (
        b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
        b'RIFF name="model" inside the audio\r\n'
        b'--XyZ\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper-1\r\n--XyZ--\r\n'
    )
    assert multipart_boundary(b'multipart/form-data; boundary="XyZ"') == boundary
    value, start, end = multipart_field(body, boundary, "model") or ("", 0, 0)
    assert value == "whisper-1"
    assert body[start:end] == b"whisper-1"
    assert multipart_field(body, boundary, "language") is None


def test_affinity_text_uses_the_start_of_the_prompt() -> None:
    long = {
        "messages": [{"role": "system", "content": "s" * 500}, {"role": "user", "content": "q"}]
    }
    assert affinity_text(long, 100) == "system:" + "s" * 93
    parts = {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}
    assert affinity_text(parts, 100) == "user:hi\n"
    assert affinity_text({"prompt": ["abc"]}, 2) == "ab"
    assert affinity_text({"input": "x"}, 10) is None


@pytest.mark.parametrize(
    ("payload", "floor"),
    [
        ({"messages": [{"role": "user", "content": "x" * 256}]}, 2),
        ({"messages": [{"role": "user", "content": "x" * 257}]}, 3),
        # content parts: only text counts (an image's base64 is not prompt text)
        ({"messages": [{"role": "user", "content": [
            {"type": "text", "text": "x" * 300},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 10**6}},
        ]}]}, 3),
        ({"prompt": "x" * 128}, 1),
        ({"prompt": ["x" * 128, "y" * 128]}, 2),
        ({"prompt": [1, 2, 3]}, 3),  # token ids count one each
        ({"input": [[1, 2], [3]]}, 3),
        ({"system": "x" * 200, "messages": [{"role": "user", "content": "hi"}]}, 2),
        ({"model": "m"}, 0),
    ],
)  # fmt: skip
def test_fewest_tokens_is_a_floor_whatever_the_tokenizer(
    payload: dict[str, object], floor: int
) -> None:
    assert fewest_tokens(payload, 128) == floor
