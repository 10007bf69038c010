"""Reading what the gateway needs from request and response bodies, cheaply.

Request side: the JSON object (or the ``model`` field of a multipart form) and the text
used for prefix affinity. Response side: the engine's token ``usage`` from a JSON body
(found near its end without parsing the whole body) and from an SSE stream, where the
usage event is removed again when the client did not ask for it.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

from maasbase.common.errors import InvalidRequest

_decoder = json.JSONDecoder()
_COUNT = re.compile(rb'"(prompt_tokens|completion_tokens|total_tokens|input_tokens|output_tokens)"'
                    rb"\s*:\s*(\d+)")  # fmt: skip
USAGE_KEY = b'"usage"'
USAGE_SCAN = 4096


def parse_json_object(body: bytes) -> dict[str, Any]:
    if not body:
        raise InvalidRequest("the request body is empty; send a JSON object")
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"the request body is not valid JSON ({exc})") from exc
    if not isinstance(payload, dict):
        raise InvalidRequest("the request body must be a JSON object")
    return payload


def required_model(payload: dict[str, Any]) -> str:
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest(
            "the request needs a 'model' field naming a model from GET /v1/models",
            details={"param": "model"},
        )
    return model


def multipart_boundary(content_type: bytes) -> bytes | None:
    for param in content_type.split(b";")[1:]:
        name, _, value = param.strip().partition(b"=")
        if name.lower() == b"boundary" and value:
            return value.strip(b'"')
    return None


def multipart_field(body: bytes, boundary: bytes, name: str) -> tuple[str, int, int] | None:
    """Value of the form field ``name`` and its start and end offsets in ``body``."""
    delimiter = b"--" + boundary
    marker = f'name="{name}"'.encode()
    pos = body.find(delimiter)
    while pos >= 0:
        head_end = body.find(b"\r\n\r\n", pos)
        if head_end < 0:
            return None
        end = body.find(b"\r\n" + delimiter, head_end)
        if end < 0:
            return None
        if marker in body[pos:head_end]:
            start = head_end + 4
            return body[start:end].decode("utf-8", "replace"), start, end
        pos = end + 2
    return None


def affinity_text(payload: dict[str, Any], limit: int) -> str | None:
    """The start of the prompt (chat messages or completion prompt), up to ``limit`` chars."""
    messages = payload.get("messages")
    if isinstance(messages, list):
        parts: list[str] = []
        size = 0
        for message in messages:
            if not isinstance(message, dict):
                continue
            content = message.get("content")
            if isinstance(content, list):
                content = "".join(
                    p.get("text", "") for p in content if isinstance(p, dict) and "text" in p
                )
            if isinstance(content, str):
                parts.append(f"{message.get('role')}:{content}\n")
                size += len(parts[-1])
                if size >= limit:
                    break
        text = "".join(parts)[:limit]
        return text or None
    prompt = payload.get("prompt")
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], str):
        prompt = prompt[0]
    return prompt[:limit] if isinstance(prompt, str) and prompt else None


def tokens_of(usage: Any) -> tuple[int, int] | None:
    """(prompt, completion) tokens of an OpenAI ``usage`` object."""
    if not isinstance(usage, dict):
        return None
    prompt = usage.get("prompt_tokens", usage.get("input_tokens"))
    if isinstance(prompt, int) and "prompt_tokens" not in usage:  # Anthropic: cache separate
        for cached in ("cache_read_input_tokens", "cache_creation_input_tokens"):
            extra = usage.get(cached)
            prompt += extra if isinstance(extra, int) else 0
    completion = usage.get("completion_tokens", usage.get("output_tokens"))
    total = usage.get("total_tokens")
    if not isinstance(prompt, int):
        return None
    if not isinstance(completion, int):
        completion = total - prompt if isinstance(total, int) and total >= prompt else 0
    return prompt, completion


def _usage_at(data: bytes, index: int) -> Any:
    text = data[index + len(USAGE_KEY) : index + len(USAGE_KEY) + USAGE_SCAN].decode(
        "utf-8", "replace"
    )
    text = text.lstrip()
    if not text.startswith(":"):
        return None
    text = text[1:].lstrip()
    if not text.startswith("{"):
        return None
    try:
        value, _ = _decoder.raw_decode(text)
    except ValueError:
        return None
    return value


def _flat_usage(data: bytes, index: int) -> tuple[int, int] | None:
    """Counts of a usage object without nested objects, read without a JSON parser."""
    end = data.find(b"}", index)
    if end < 0 or data.find(b"{", index + len(USAGE_KEY) + 1, end) >= 0:
        return None
    counts = dict(_COUNT.findall(data, index, end))
    prompt = counts.get(b"prompt_tokens", counts.get(b"input_tokens"))
    if prompt is None:
        return None
    completion = counts.get(b"completion_tokens", counts.get(b"output_tokens"))
    if completion is not None:
        return int(prompt), int(completion)
    total = counts.get(b"total_tokens")
    return int(prompt), max(0, int(total) - int(prompt)) if total is not None else 0


SMALL_BODY = 4096  # parsed whole: one C call beats searching for the usage object


def usage_from_json(body: bytes) -> tuple[int, int] | None:
    """Token usage of a JSON response: a small body is parsed whole; in a large one
    (embeddings, long completions) the last top-level-looking ``"usage"`` is read."""
    if len(body) <= SMALL_BODY:
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None
        return tokens_of(payload.get("usage")) if isinstance(payload, dict) else None
    index = body.rfind(USAGE_KEY)
    while index > 0 and body[index - 1] == 0x5C:  # an escaped quote inside a string
        index = body.rfind(USAGE_KEY, 0, index)
    if index < 0:
        return None
    found = _flat_usage(body, index) or tokens_of(_usage_at(body, index))
    if found is not None:
        return found
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    return tokens_of(payload.get("usage")) if isinstance(payload, dict) else None


def _has_usage_value(event: bytes) -> bool:
    index = event.find(USAGE_KEY)
    while index >= 0:
        rest = event[index + len(USAGE_KEY) : index + len(USAGE_KEY) + 8].lstrip()
        if rest[:1] == b":" and rest[1:].lstrip()[:1] == b"{":
            return True
        index = event.find(USAGE_KEY, index + 1)
    return False


class SseEvents:
    """Splits an SSE byte stream into the ``data`` payloads of its complete events."""

    def __init__(self) -> None:
        self._partial = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        data = self._partial + chunk if self._partial else chunk
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n")
        events = data.split(b"\n\n")
        self._partial = events.pop()
        return [payload for event in events if (payload := event_data(event)) is not None]

    def finish(self) -> list[bytes]:
        rest, self._partial = self._partial, b""
        payload = event_data(rest)
        return [] if payload is None else [payload]


def event_data(event: bytes) -> bytes | None:
    """The joined ``data:`` lines of one SSE event, None when it has none."""
    lines = [line[5:].lstrip(b" ") for line in event.split(b"\n") if line.startswith(b"data:")]
    return b"\n".join(lines) if lines else None


class SseUsage:
    """Relays an OpenAI SSE stream event by event, reading the ``usage`` it carries.

    ``feed`` returns the bytes to send now: every complete event, as received, except
    that when ``strip`` is set (the gateway asked for usage, the client did not) the
    usage-only event is dropped and a usage object on a content event is removed.
    """

    def __init__(self, *, strip: bool) -> None:
        self.strip = strip
        self.usage: tuple[int, int] | None = None
        self.events = 0  # relayed events: a completion token estimate when usage never came
        self._partial = b""

    def feed(self, chunk: bytes) -> bytes:
        data = self._partial + chunk if self._partial else chunk
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n")
        cut = data.rfind(b"\n\n")
        if cut < 0:
            self._partial = data
            return b""
        ready, self._partial = data[: cut + 2], data[cut + 2 :]
        self.events += ready.count(b"\n\n")
        if USAGE_KEY not in ready:
            return ready
        out = [self._event(event) for event in ready[:-2].split(b"\n\n")]
        return b"".join(out)

    def finish(self) -> bytes:
        rest, self._partial = self._partial, b""
        return self._event(rest) if rest.strip() else b""

    def _event(self, event: bytes) -> bytes:
        if not _has_usage_value(event):
            return event + b"\n\n"
        lines = event.split(b"\n")
        for i, line in enumerate(lines):
            if not line.startswith(b"data:"):
                continue
            try:
                payload = json.loads(line[5:])
            except (ValueError, UnicodeDecodeError):
                continue
            if not isinstance(payload, dict):
                continue
            found = tokens_of(payload.get("usage"))
            if found is None:
                continue
            self.usage = found
            if not self.strip:
                continue
            if not payload.get("choices"):
                return b""
            del payload["usage"]
            lines[i] = b"data: " + json.dumps(payload, separators=(",", ":")).encode()
        return b"\n".join(lines) + b"\n\n"


def _text_size(value: Any) -> tuple[int, int]:
    """Characters of text and token ids in a prompt-like value: a string, a list of
    token ids, content parts with ``text``, or lists of those."""
    if isinstance(value, str):
        return len(value), 0
    if isinstance(value, list):
        chars = ids = 0
        for item in value:
            if isinstance(item, int) and not isinstance(item, bool):
                ids += 1
            elif isinstance(item, dict):
                text = item.get("text")
                if isinstance(text, str):
                    chars += len(text)
            else:
                more_chars, more_ids = _text_size(item)
                chars += more_chars
                ids += more_ids
        return chars, ids
    return 0, 0


def prompt_size(payload: dict[str, Any]) -> tuple[int, int]:
    """Characters of text and token ids the prompt of a chat, completion, embedding or
    Messages request holds (``messages[].content``, ``prompt``, ``input``, ``system``)."""
    chars = ids = 0
    messages = payload.get("messages")
    if isinstance(messages, list):
        for message in messages:
            if isinstance(message, dict):
                more_chars, more_ids = _text_size(message.get("content"))
                chars += more_chars
                ids += more_ids
    for field in ("prompt", "input", "system"):
        more_chars, more_ids = _text_size(payload.get(field))
        chars += more_chars
        ids += more_ids
    return chars, ids


def fewest_tokens(payload: dict[str, Any], max_chars_per_token: int) -> int:
    """A floor on the tokens of the request's prompt, whatever the tokenizer: no token
    of a real vocabulary spans more than ``max_chars_per_token`` characters."""
    chars, ids = prompt_size(payload)
    return ids + -(-chars // max_chars_per_token)
