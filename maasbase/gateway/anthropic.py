"""Anthropic Messages API (``POST /v1/messages``) on top of an OpenAI chat backend.

``to_chat`` turns a Messages request into a chat completions request (system prompt,
text and image blocks, tool use and tool results, tools and tool choice, stop
sequences); ``to_message`` turns a chat completion into a Message; ``MessageStream``
turns chat completion chunks into Messages stream events (message_start,
content_block_start/delta/stop for text and tool use, message_delta, message_stop).
For engines that serve the Messages API themselves, requests pass through unchanged
and ``StreamUsage`` reads the token counts of their streams.
"""

from __future__ import annotations

import json
from typing import Any

from maasbase.common.errors import InvalidRequest

STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}
_PASSTHROUGH = ("temperature", "top_p", "top_k")


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text"
        )
    return ""


def _image_url(block: dict[str, Any]) -> dict[str, Any]:
    source = block.get("source") or {}
    if source.get("type") == "url":
        return {"type": "image_url", "image_url": {"url": source.get("url", "")}}
    url = f"data:{source.get('media_type', 'image/png')};base64,{source.get('data', '')}"
    return {"type": "image_url", "image_url": {"url": url}}


def _user_messages(content: list[Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for block in content:
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "tool_result":
            text = _text_of(block.get("content"))
            out.append({"role": "tool", "tool_call_id": block.get("tool_use_id"), "content": text})
        elif kind == "text":
            parts.append({"type": "text", "text": block.get("text", "")})
        elif kind == "image":
            parts.append(_image_url(block))
    if parts:
        if all(p["type"] == "text" for p in parts):
            out.append({"role": "user", "content": "".join(p["text"] for p in parts)})
        else:
            out.append({"role": "user", "content": parts})
    return out


def _assistant_message(content: list[Any]) -> dict[str, Any]:
    text = _text_of(content)
    calls = [
        {
            "id": b.get("id"),
            "type": "function",
            "function": {"name": b.get("name"), "arguments": json.dumps(b.get("input") or {})},
        }
        for b in content
        if isinstance(b, dict) and b.get("type") == "tool_use"
    ]
    message: dict[str, Any] = {"role": "assistant", "content": text or None}
    if calls:
        message["tool_calls"] = calls
    return message


def _tool_choice(choice: Any) -> Any:
    if not isinstance(choice, dict):
        return None
    kind = choice.get("type")
    if kind == "tool":
        return {"type": "function", "function": {"name": choice.get("name")}}
    return {"auto": "auto", "any": "required", "none": "none"}.get(str(kind))


def to_chat(request: dict[str, Any]) -> dict[str, Any]:
    """The chat completions request equivalent to a Messages request."""
    messages = request.get("messages")
    if not isinstance(messages, list):
        raise InvalidRequest("'messages' must be a list", details={"param": "messages"})
    max_tokens = request.get("max_tokens")
    if not isinstance(max_tokens, int) or max_tokens < 1:
        raise InvalidRequest(
            "'max_tokens' must be a positive integer", details={"param": "max_tokens"}
        )
    chat_messages: list[dict[str, Any]] = []
    system = _text_of(request.get("system"))
    if system:
        chat_messages.append({"role": "system", "content": system})
    for message in messages:
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise InvalidRequest("each message needs role 'user' or 'assistant'")
        content = message.get("content")
        if isinstance(content, str):
            chat_messages.append({"role": message["role"], "content": content})
        elif not isinstance(content, list):
            raise InvalidRequest("message content must be a string or a list of blocks")
        elif message["role"] == "user":
            chat_messages.extend(_user_messages(content))
        else:
            chat_messages.append(_assistant_message(content))
    chat: dict[str, Any] = {
        "model": request.get("model"),
        "messages": chat_messages,
        "max_tokens": max_tokens,
    }
    for name in _PASSTHROUGH:
        if name in request:
            chat[name] = request[name]
    if request.get("stop_sequences"):
        chat["stop"] = request["stop_sequences"]
    tools = request.get("tools")
    if isinstance(tools, list) and tools:
        chat["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": t.get("name"),
                    "description": t.get("description", ""),
                    "parameters": t.get("input_schema") or {"type": "object"},
                },
            }
            for t in tools
            if isinstance(t, dict)
        ]
    choice = _tool_choice(request.get("tool_choice"))
    if choice is not None:
        chat["tool_choice"] = choice
    user = (request.get("metadata") or {}).get("user_id")
    if isinstance(user, str):
        chat["user"] = user
    if request.get("stream"):
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    return chat


def _arguments(raw: Any) -> Any:
    if not isinstance(raw, str) or not raw:
        return {}
    try:
        return json.loads(raw)
    except ValueError:
        return {"arguments": raw}


def to_message(completion: dict[str, Any], model: str) -> dict[str, Any]:
    """The Message equivalent to a chat completion."""
    choices = completion.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    message = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    if message.get("content"):
        content.append({"type": "text", "text": message["content"]})
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        content.append({
            "type": "tool_use",
            "id": call.get("id") or f"toolu_{len(content)}",
            "name": function.get("name"),
            "input": _arguments(function.get("arguments")),
        })  # fmt: skip
    usage = completion.get("usage") or {}
    return {
        "id": f"msg_{completion.get('id', '')}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": STOP_REASONS.get(str(choice.get("finish_reason")), "end_turn"),
        "stop_sequence": None,
        "usage": {
            "input_tokens": usage.get("prompt_tokens", 0),
            "output_tokens": usage.get("completion_tokens", 0),
        },
    }


def _event(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


class MessageStream:
    """Chat completion chunks in, Messages stream events out."""

    def __init__(self, model: str, message_id: str) -> None:
        self.model = model
        self.message_id = message_id
        self.started = False
        self.block: int = -1
        self.block_kind: str | None = None
        self.tool_blocks: dict[int, int] = {}  # chat tool call index -> block index
        self.stop_reason = "end_turn"
        self.input_tokens = 0
        self.output_tokens = 0

    def _start(self) -> bytes:
        self.started = True
        message: dict[str, Any] = {
            "id": self.message_id, "type": "message", "role": "assistant", "model": self.model,
            "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }  # fmt: skip
        return _event("message_start", {"type": "message_start", "message": message}) + _event(
            "ping", {"type": "ping"}
        )

    def _open(self, kind: str, block: dict[str, Any]) -> bytes:
        out = self._close()
        self.block += 1
        self.block_kind = kind
        return out + _event(
            "content_block_start",
            {"type": "content_block_start", "index": self.block, "content_block": block},
        )

    def _close(self) -> bytes:
        if self.block_kind is None:
            return b""
        self.block_kind = None
        return _event("content_block_stop", {"type": "content_block_stop", "index": self.block})

    def feed(self, chunk: dict[str, Any]) -> bytes:
        out = b"" if self.started else self._start()
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self.input_tokens = usage.get("prompt_tokens", self.input_tokens)
            self.output_tokens = usage.get("completion_tokens", self.output_tokens)
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if text:
                if self.block_kind != "text":
                    out += self._open("text", {"type": "text", "text": ""})
                delta_event = {"type": "text_delta", "text": text}
                out += _event(
                    "content_block_delta",
                    {"type": "content_block_delta", "index": self.block, "delta": delta_event},
                )
            for call in delta.get("tool_calls") or []:
                out += self._tool_delta(call)
            if choice.get("finish_reason"):
                self.stop_reason = STOP_REASONS.get(choice["finish_reason"], "end_turn")
        return out

    def _tool_delta(self, call: dict[str, Any]) -> bytes:
        out = b""
        index = call.get("index", 0)
        function = call.get("function") or {}
        if index not in self.tool_blocks:
            block: dict[str, Any] = {
                "type": "tool_use",
                "id": call.get("id") or f"toolu_{index}",
                "name": function.get("name"),
                "input": {},
            }
            out += self._open("tool_use", block)
            self.tool_blocks[index] = self.block
        arguments = function.get("arguments")
        if arguments:
            delta = {"type": "input_json_delta", "partial_json": arguments}
            out += _event(
                "content_block_delta",
                {"type": "content_block_delta", "index": self.tool_blocks[index], "delta": delta},
            )
        return out

    def finish(self) -> bytes:
        out = (b"" if self.started else self._start()) + self._close()
        delta = {"stop_reason": self.stop_reason, "stop_sequence": None}
        usage = {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens}
        out += _event("message_delta", {"type": "message_delta", "delta": delta, "usage": usage})
        return out + _event("message_stop", {"type": "message_stop"})


def input_tokens(usage: dict[str, Any]) -> int:
    """All prompt tokens of a Messages ``usage``: the uncached ones plus those read from
    or written to the engine's prompt cache."""
    total = 0
    for name in ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens"):
        value = usage.get(name)
        if isinstance(value, int):
            total += value
    return total


class StreamUsage:
    """Reads the token usage of a Messages stream passed through as it is: input tokens
    from ``message_start`` (and ``message_delta`` when it repeats them), output tokens
    from the last ``message_delta``."""

    def __init__(self) -> None:
        self.input_tokens = 0
        self.output_tokens = 0
        self.seen = False

    def feed(self, data: bytes) -> None:
        if b'"usage"' not in data:
            return
        try:
            event = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            return
        if not isinstance(event, dict):
            return
        usage: Any = event.get("usage")
        if event.get("type") == "message_start" and isinstance(event.get("message"), dict):
            usage = event["message"].get("usage")
        if not isinstance(usage, dict):
            return
        self.seen = True
        if any(k in usage for k in ("input_tokens", "cache_read_input_tokens")):
            self.input_tokens = input_tokens(usage)
        if isinstance(usage.get("output_tokens"), int):
            self.output_tokens = usage["output_tokens"]
