"""The inference endpoints: OpenAI pass-through and Anthropic Messages translation.

Every endpoint runs the same steps: key, body, model, permission, route, limits, then
``_exchange`` (forward, relay, and in ``finally`` release the balancer slot and the
upstream response, record usage, count tokens against the key's limits).
"""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from maasbase.common.errors import InvalidRequest, MaasError
from maasbase.common.routing import UNKNOWN_MODEL, Upstream, Usage
from maasbase.gateway import anthropic
from maasbase.gateway.auth import Caller
from maasbase.gateway.call import Call, Style
from maasbase.gateway.errors import (
    ContextLengthExceeded,
    UpstreamFailed,
    UpstreamRejected,
    clip,
    upstream_error_message,
)
from maasbase.gateway.payloads import (
    SseEvents,
    SseUsage,
    affinity_text,
    fewest_tokens,
    multipart_boundary,
    multipart_field,
    parse_json_object,
    required_model,
)
from maasbase.gateway.proxy import (
    SSE_HEADERS,
    Outgoing,
    content_type,
    relay_json,
    relay_raw,
    relay_sse,
    response_headers,
)
from maasbase.gateway.upstream import UpstreamResponse

if TYPE_CHECKING:
    from maasbase.gateway.app import GatewayApp

Relay = Callable[[Call, UpstreamResponse, Usage], Awaitable[None]]
BodyFor = Callable[[Upstream], bytes]
EVENT_STREAM = [(b"content-type", b"text/event-stream"), *SSE_HEADERS]
JSON_ONLY = [(b"content-type", b"application/json")]


@dataclass(frozen=True)
class Endpoint:
    name: str  # as metered, e.g. "chat.completions"
    upstream_path: str  # below the upstream's base URL (which ends in /v1)
    stream_usage: bool = False  # ask the engine for usage in streams
    multipart: bool = False


ENDPOINTS = {
    "/v1/chat/completions": Endpoint("chat.completions", "/chat/completions", stream_usage=True),
    "/v1/completions": Endpoint("completions", "/completions", stream_usage=True),
    "/v1/embeddings": Endpoint("embeddings", "/embeddings"),
    "/v1/rerank": Endpoint("rerank", "/rerank"),
    "/v1/audio/speech": Endpoint("audio.speech", "/audio/speech"),
    "/v1/audio/transcriptions": Endpoint(
        "audio.transcriptions", "/audio/transcriptions", multipart=True
    ),
    "/v1/audio/translations": Endpoint("audio.translations", "/audio/translations", multipart=True),
    "/v1/images/generations": Endpoint("images.generations", "/images/generations"),
    "/v1/images/edits": Endpoint("images.edits", "/images/edits", multipart=True),
}


USAGE_OPTION = b'{"stream_options":{"include_usage":true},'


def with_usage_option(body: bytes) -> bytes | None:
    """The body with ``stream_options.include_usage`` added as its first member, without
    re-encoding a possibly long prompt; None when the body does not start with ``{``."""
    start = body.find(b"{")
    if start < 0 or body[:start].strip():
        return None
    rest = body[start + 1 :]
    if not rest.strip().startswith(b'"'):
        return None  # an empty object
    return USAGE_OPTION + rest


def json_body_for(model: str, payload: dict[str, Any], body: bytes, *, rewrite: bool) -> BodyFor:
    """The body each upstream gets: the client's bytes unless the payload was changed or
    the upstream serves the model under another name. ``body`` may already carry the
    change, then ``rewrite`` is False."""
    encoded: dict[str, bytes] = {}

    def body_for(upstream: Upstream) -> bytes:
        target = upstream.upstream_model or model
        if target == model and not rewrite:
            return body
        cached = encoded.get(target)
        if cached is None:
            data = {**payload, "model": target}
            cached = encoded[target] = orjson.dumps(data)
        return cached

    return body_for


def multipart_body_for(call: Call, body: bytes) -> tuple[str, BodyFor]:
    boundary = multipart_boundary(call.content_type)
    if not call.content_type.startswith(b"multipart/form-data") or boundary is None:
        raise InvalidRequest("this endpoint takes a multipart/form-data body")
    field = multipart_field(body, boundary, "model")
    if field is None or not field[0]:
        raise InvalidRequest("the form needs a 'model' field", details={"param": "model"})
    model, start, end = field

    def body_for(upstream: Upstream) -> bytes:
        target = upstream.upstream_model or model
        return body if target == model else body[:start] + target.encode() + body[end:]

    return model, body_for


class Handlers:
    def __init__(self, app: GatewayApp) -> None:
        self.app = app

    def openai(self, endpoint: Endpoint) -> Callable[[Call], Awaitable[None]]:
        return functools.partial(self._openai, endpoint=endpoint)

    async def _admit(self, caller: Caller) -> None:
        """Take the request from the key's limits and its user's; 429 when they refuse it."""
        grant = caller.grant
        now = self.app.clock.now()
        admission = await self.app.limits.admit(grant.api_key_id, grant.limits, now, caller.user)
        admission.raise_if_refused(grant.limits, grant.user_limits)

    def _refused(
        self, call: Call, caller: Caller, model: str, endpoint: str, exc: MaasError
    ) -> None:
        """Meter a request the gateway answered itself (bad body, model not allowed or
        unknown, limits, no instance) against the key that sent it. A model the gateway
        does not serve is recorded as ``UNKNOWN_MODEL``: what the client sent is kept
        neither in memory nor in the database."""
        grant = caller.grant
        if model not in self.app.holder.snapshot.models:
            model = UNKNOWN_MODEL
        usage = Usage(self.app.clock.now(), grant.api_key_id, grant.user_id, model, endpoint,
                      None, exc.status_code, latency_ms=call.elapsed_ms)  # fmt: skip
        self.app.meter.record(usage)

    def _check_fits(self, payload: dict[str, Any], model: str, context: int) -> None:
        """Refuse a prompt that cannot fit the model's context, whatever its tokenizer."""
        floor = fewest_tokens(payload, self.app.config.max_chars_per_token)
        if floor > context:
            raise ContextLengthExceeded(
                f"this prompt needs at least {floor} tokens, more than the {context} tokens "
                f"of context model '{clip(model)}' takes; shorten it",
                details={"param": "messages" if "messages" in payload else "prompt"},
            )

    def _affinity(self, call: Call, payload: dict[str, Any] | None) -> str | None:
        if call.affinity is not None:
            return call.affinity.decode("latin-1")
        config = self.app.config
        if config.prefix_affinity and payload is not None:
            return affinity_text(payload, config.prefix_chars)
        return None

    async def _openai(self, call: Call, endpoint: Endpoint) -> None:
        app = self.app
        caller = await app.caller(call)
        model = ""
        try:
            body = await call.read_body(app.body_limit(call.method, call.path))
            payload: dict[str, Any] | None = None
            if endpoint.multipart:
                model, body_for = multipart_body_for(call, body)
            else:
                payload = parse_json_object(body)
                model = required_model(payload)
            caller.check_model(model)
            routed = await app.routed(model)
            if payload is not None and routed.context_length is not None:
                self._check_fits(payload, model, routed.context_length)
            if caller.limited:
                await self._admit(caller)
            stream = strip = rewrite = False
            if payload is not None:
                stream = payload.get("stream") is True
                options = payload.get("stream_options")
                if (
                    stream
                    and endpoint.stream_usage
                    and not (isinstance(options, dict) and options.get("include_usage"))
                ):
                    strip = True  # the gateway asks for usage; the client does not see it
                    patched = None if "stream_options" in payload else with_usage_option(body)
                    extra = options if isinstance(options, dict) else {}
                    payload["stream_options"] = {**extra, "include_usage": True}
                    if patched is None:
                        rewrite = True
                    else:
                        body = patched
                body_for = json_body_for(model, payload, body, rewrite=rewrite)
            affinity = self._affinity(call, payload)
            out = Outgoing(routed, endpoint.upstream_path, call.forward, body_for, affinity)
        except MaasError as exc:
            self._refused(call, caller, model, endpoint.name, exc)
            raise

        async def relay(call: Call, response: UpstreamResponse, usage: Usage) -> None:
            await self._relay_openai(call, response, usage, strip=strip)

        await self._exchange(call, caller, out, endpoint.name, stream, relay)

    async def _relay_openai(
        self, call: Call, response: UpstreamResponse, usage: Usage, *, strip: bool
    ) -> None:
        kind = content_type(response)
        if kind.startswith(b"text/event-stream"):
            await call.start_response(
                response.status, [*response_headers(response), *SSE_HEADERS], sse=True
            )
            sse = SseUsage(strip=strip)
            try:
                await relay_sse(call, response, sse)
            finally:
                if sse.usage is not None:
                    usage.prompt_tokens, usage.completion_tokens = sse.usage
                else:
                    usage.completion_tokens = sse.events
        elif b"json" in kind or response.status >= 400:
            tokens = await relay_json(call, response)
            if tokens is not None:
                usage.prompt_tokens, usage.completion_tokens = tokens
        else:
            await call.start_response(response.status, response_headers(response))
            await relay_raw(call, response)

    async def _exchange(
        self, call: Call, caller: Caller, out: Outgoing, endpoint: str, stream: bool, relay: Relay
    ) -> None:
        app = self.app
        grant = caller.grant
        usage = Usage(app.clock.now(), grant.api_key_id, grant.user_id, out.model.name,
                      endpoint, None, 0, stream=stream)  # fmt: skip
        upstream = response = None
        failure: BaseException | None = None
        try:
            upstream, response = await app.forwarder.open(out)
            usage.upstream_id = upstream.id
            usage.status = response.status
            await relay(call, response, usage)
        except MaasError as exc:
            usage.status = exc.status_code
            failure = exc
        except BaseException as exc:  # cancelled (or a bug): metered and charged all the same
            failure = exc
        # the clean-up awaits, so it follows the handlers instead of a finally: compiled.py
        if response is not None:
            response.release()
        if upstream is not None:
            app.balancer.release(upstream.id)
        if call.disconnected:
            usage.status = 499
        usage.latency_ms = call.elapsed_ms
        usage.ttft_ms = call.ttft
        app.meter.record(usage)
        tokens = usage.prompt_tokens + usage.completion_tokens
        if tokens and caller.limited:
            await app.limits.consume(
                grant.api_key_id, grant.limits, tokens, app.clock.now(), caller.user
            )
        if failure is not None:
            raise failure

    # Anthropic Messages
    async def messages(self, call: Call) -> None:
        """Passed through to engines that serve the Messages API themselves, translated to
        chat for the others."""
        app = self.app
        call.style = Style.ANTHROPIC
        caller = await app.caller(call)
        model = ""
        relay: Relay
        try:
            body = await call.read_body(app.body_limit(call.method, call.path))
            payload = parse_json_object(body)
            model = required_model(payload)
            caller.check_model(model)
            routed = await app.routed(model)
            if routed.context_length is not None:
                self._check_fits(payload, model, routed.context_length)
            if caller.limited:
                await self._admit(caller)
            if all(upstream.anthropic_messages for upstream in routed.upstreams):
                stream = payload.get("stream") is True
                body_for = json_body_for(model, payload, body, rewrite=False)
                affinity = self._affinity(call, payload)
                out = Outgoing(routed, "/messages", call.forward, body_for, affinity)
                relay = self._relay_through
            else:
                chat = anthropic.to_chat(payload)
                stream = bool(chat.get("stream"))
                body_for = json_body_for(model, chat, b"", rewrite=True)
                out = Outgoing(routed, "/chat/completions", JSON_ONLY, body_for,
                               self._affinity(call, chat))  # fmt: skip
                relay = functools.partial(self._relay_messages, model=model, stream=stream)
        except MaasError as exc:
            self._refused(call, caller, model, "messages", exc)
            raise
        await self._exchange(call, caller, out, "messages", stream, relay)

    async def _relay_through(self, call: Call, response: UpstreamResponse, usage: Usage) -> None:
        if not content_type(response).startswith(b"text/event-stream"):
            tokens = await relay_json(call, response)
            if tokens is not None:
                usage.prompt_tokens, usage.completion_tokens = tokens
            return
        await call.start_response(
            response.status, [*response_headers(response), *SSE_HEADERS], sse=True
        )
        events, counts = SseEvents(), anthropic.StreamUsage()
        try:
            while chunk := await response.next_chunk():
                for data in events.feed(chunk):
                    counts.feed(data)
                call.first_byte()
                await call.write(chunk)
            for data in events.finish():
                counts.feed(data)
            await call.end()
        finally:
            usage.prompt_tokens, usage.completion_tokens = counts.input_tokens, counts.output_tokens

    async def _relay_messages(
        self, call: Call, response: UpstreamResponse, usage: Usage, *, model: str, stream: bool
    ) -> None:
        if response.status >= 400:
            body = await response.read()
            raise UpstreamRejected(
                upstream_error_message(body, response.status), status=response.status
            )
        if not stream or not content_type(response).startswith(b"text/event-stream"):
            try:
                completion = json.loads(await response.read())
            except (ValueError, UnicodeDecodeError) as exc:
                raise UpstreamFailed(f"the model server sent invalid JSON ({exc})") from exc
            message = anthropic.to_message(completion, model)
            usage.prompt_tokens = message["usage"]["input_tokens"]
            usage.completion_tokens = message["usage"]["output_tokens"]
            await call.json(200, message)
            return
        await call.start_response(200, EVENT_STREAM, sse=True)
        translator = anthropic.MessageStream(model, f"msg_{uuid.uuid4().hex[:24]}")
        events = SseEvents()
        try:
            while chunk := await response.next_chunk():
                out = b"".join(self._translate(translator, data) for data in events.feed(chunk))
                if out:
                    call.first_byte()
                    await call.write(out)
            tail = b"".join(self._translate(translator, data) for data in events.finish())
            tail += translator.finish()
            await call.end(tail)
        finally:
            usage.prompt_tokens = translator.input_tokens
            usage.completion_tokens = translator.output_tokens

    @staticmethod
    def _translate(translator: anthropic.MessageStream, data: bytes) -> bytes:
        if data == b"[DONE]":
            return b""
        try:
            chunk = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            return b""
        return translator.feed(chunk) if isinstance(chunk, dict) else b""
