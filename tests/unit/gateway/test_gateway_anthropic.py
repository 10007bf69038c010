"""Anthropic Messages ⇄ OpenAI chat translation."""

from __future__ import annotations

import json

import pytest

from maasbase.common.errors import InvalidRequest
from maasbase.gateway import anthropic
from maasbase.gateway.anthropic import MessageStream, to_chat, to_message
from maasbase.gateway.payloads import usage_from_json


def test_request_with_system_images_tools_and_tool_results() -> None:
    chat = to_chat({
        "model": "m",
        "max_tokens": 64,
        "system": [{"type": "text", "text": "Be brief."}],
        "stop_sequences": ["END"],
        "temperature": 0.2,
        "stream": True,
        "tools": [{"name": "weather", "description": "d", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "tool", "name": "weather"},
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                             "data": "AAA"}},
            ]},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "t1", "name": "weather", "input": {"city": "Paris"}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "t1", "content": "sunny"},
            ]},
        ],
    })  # fmt: skip
    assert chat["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAA"}},
        ]},
        {"role": "assistant", "content": "Checking.", "tool_calls": [
            {"id": "t1", "type": "function",
             "function": {"name": "weather", "arguments": '{"city": "Paris"}'}},
        ]},
        {"role": "tool", "tool_call_id": "t1", "content": "sunny"},
    ]  # fmt: skip
    assert chat["stop"] == ["END"]
    assert chat["temperature"] == 0.2
    assert chat["max_tokens"] == 64
    assert chat["stream_options"] == {"include_usage": True}
    assert chat["tools"][0]["function"]["parameters"] == {"type": "object"}
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "weather"}}


@pytest.mark.parametrize(
    "request_body",
    [
        {"model": "m", "messages": [{"role": "user", "content": "hi"}]},  # no max_tokens
        {"model": "m", "max_tokens": 5, "messages": "hi"},
        {"model": "m", "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]},
    ],
)
def test_invalid_requests(request_body: dict[str, object]) -> None:
    with pytest.raises(InvalidRequest):
        to_chat(request_body)


def test_completion_to_message() -> None:
    message = to_message(
        {
            "id": "abc",
            "choices": [{"finish_reason": "tool_calls", "message": {
                "content": "Let me look.",
                "tool_calls": [{"id": "c1", "function": {"name": "f", "arguments": '{"a": 1}'}}],
            }}],
            "usage": {"prompt_tokens": 9, "completion_tokens": 4},
        },
        "claude-ish",
    )  # fmt: skip
    assert message == {
        "id": "msg_abc", "type": "message", "role": "assistant", "model": "claude-ish",
        "content": [{"type": "text", "text": "Let me look."},
                    {"type": "tool_use", "id": "c1", "name": "f", "input": {"a": 1}}],
        "stop_reason": "tool_use", "stop_sequence": None,
        "usage": {"input_tokens": 9, "output_tokens": 4},
    }  # fmt: skip


def events(data: bytes) -> list[tuple[str, dict[str, object]]]:
    out = []
    for block in data.decode().strip().split("\n\n"):
        name_line, data_line = block.split("\n")
        out.append((name_line.removeprefix("event: "), json.loads(data_line[6:])))
    return out


def test_stream_translation_of_text_and_tool_calls() -> None:
    stream = MessageStream("m", "msg_1")
    raw = stream.feed({"choices": [{"delta": {"role": "assistant", "content": "Hi"}}]})
    raw += stream.feed({"choices": [{"delta": {"content": " there"}}]})
    raw += stream.feed({"choices": [{"delta": {"tool_calls": [
        {"index": 0, "id": "c1", "function": {"name": "f", "arguments": '{"a"'}}]}}]})  # fmt: skip
    last_call = {"index": 0, "function": {"arguments": ": 1}"}}
    raw += stream.feed(
        {"choices": [{"delta": {"tool_calls": [last_call]}, "finish_reason": "tool_calls"}]}
    )
    raw += stream.feed({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 7}})
    raw += stream.finish()
    got = events(raw)
    assert [name for name, _ in got] == [
        "message_start", "ping",
        "content_block_start", "content_block_delta", "content_block_delta", "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_delta", "content_block_stop",
        "message_delta", "message_stop",
    ]  # fmt: skip
    text = "".join(
        str(d["delta"]["text"])  # type: ignore[index]
        for n, d in got
        if n == "content_block_delta" and d["index"] == 0
    )
    assert text == "Hi there"
    assert got[6][1]["content_block"] == {"type": "tool_use", "id": "c1", "name": "f", "input": {}}
    assert got[10][1]["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
    assert got[10][1]["usage"] == {"input_tokens": 5, "output_tokens": 7}
    assert (stream.input_tokens, stream.output_tokens) == (5, 7)


def test_empty_stream_still_forms_a_message() -> None:
    names = [name for name, _ in events(MessageStream("m", "msg_2").finish())]
    assert names == ["message_start", "ping", "message_delta", "message_stop"]


def test_stream_usage_of_a_passed_through_messages_stream() -> None:
    usage = anthropic.StreamUsage()
    start = {"type": "message_start", "message": {"usage": {
        "input_tokens": 1, "cache_read_input_tokens": 30, "output_tokens": 0}}}  # fmt: skip
    usage.feed(json.dumps(start).encode())
    usage.feed(b'{"type":"content_block_delta","delta":{"text":"usage"}}')
    usage.feed(b'{"type":"message_delta","usage":{"output_tokens":4}}')
    usage.feed(b'not json but has "usage"')
    assert (usage.input_tokens, usage.output_tokens, usage.seen) == (31, 4, True)


def test_messages_usage_counts_cached_prompt_tokens() -> None:
    body = {"usage": {"input_tokens": 2, "cache_read_input_tokens": 5,
                      "cache_creation_input_tokens": 1, "output_tokens": 3}}  # fmt: skip
    assert usage_from_json(json.dumps(body).encode()) == (8, 3)
    openai = {"usage": {"prompt_tokens": 9, "completion_tokens": 2, "cache_read_input_tokens": 7}}
    assert usage_from_json(json.dumps(openai).encode()) == (9, 2)
