"""One request on the gateway's own server, and the HTTP/1.1 framing of its answer.

``NativeCall`` holds the request that ``server.HttpConnection`` parsed (its body already
read whole) and frames the answer: one write for a whole response, chunks for streams
on HTTP/1.1 (the end of the connection ends the body on HTTP/1.0), nothing after the
headers for HEAD. The status line and headers go out with the first part of the body;
an answer that fails before that part left is taken back (``unstart``) so that an error
response replaces it, one that fails later is cut (``abort``).
"""

from __future__ import annotations

import functools
import http
import logging
from typing import TYPE_CHECKING

from maasbase.common.errors import MaasError
from maasbase.gateway.call import Call, Headers
from maasbase.gateway.errors import RequestTooLarge, openai_error

if TYPE_CHECKING:
    from maasbase.gateway.server import HttpConnection

logger = logging.getLogger("maasbase.gateway.server")

LAST_CHUNK = b"0\r\n\r\n"


@functools.cache
def status_line(status: int) -> bytes:
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = ""
    return f"HTTP/1.1 {status} {phrase}\r\n".encode("latin-1")


def head_lines(status: int, headers: Headers) -> list[bytes]:
    """The status line and header lines of a response, without the closing blank line."""
    parts = [status_line(status)]
    for name, value in headers:
        parts += (name, b": ", value, b"\r\n")
    return parts


def refusal(error: MaasError) -> bytes:
    """A whole error answer in the OpenAI shape that closes the connection."""
    status, headers, body = openai_error(error)
    return b"".join([*head_lines(status, headers), b"connection: close\r\n\r\n", body])


class NativeCall(Call):
    __slots__ = (
        "_body", "_chunked", "_conn", "_head", "_head_only", "complete", "http11", "keep_alive",
    )  # fmt: skip

    def __init__(
        self,
        conn: HttpConnection,
        method: str,
        path: str,
        headers: Headers,
        body: bytes,
        *,
        http11: bool,
        keep_alive: bool,
        affinity_header: bytes | None,
    ) -> None:
        super().__init__(method, path, headers, affinity_header)
        self.http11 = http11
        self._conn = conn
        self._body = body
        self._head = b""
        self._chunked = False
        self._head_only = method == "HEAD"
        self.keep_alive = keep_alive
        self.complete = False  # the whole response was handed to the socket

    async def read_body(self, limit: int) -> bytes:
        if len(self._body) > limit:
            raise RequestTooLarge(f"the request body is larger than {limit} bytes")
        return self._body

    async def start_response(self, status: int, headers: Headers, *, sse: bool = False) -> None:
        self.response_started = True
        self.sse = sse
        parts = head_lines(status, headers)
        sized = any(name == b"content-length" for name, _ in headers)
        if not sized and not self._head_only:
            if self.http11:
                parts.append(b"transfer-encoding: chunked\r\n")
                self._chunked = True
            else:
                self.keep_alive = False  # the end of the body is the end of the connection
        if not self.keep_alive:
            parts.append(b"connection: close\r\n")
        parts.append(b"\r\n")
        self._head = b"".join(parts)  # sent with the first part of the body

    async def raw(self, status: int, headers: Headers, body: bytes) -> None:
        """A whole response with a known body, in one write."""
        self.response_started = True
        parts = head_lines(status, headers)
        if not self.keep_alive:
            parts.append(b"connection: close\r\n")
        parts += (b"content-length: %d\r\n\r\n" % len(body), b"" if self._head_only else body)
        self.complete = True
        self._conn.finish(self, b"".join(parts))

    def _frame(self, data: bytes) -> bytes:
        if self._head_only or not data:
            return b""
        return b"%x\r\n%b\r\n" % (len(data), data) if self._chunked else data

    async def write(self, data: bytes) -> None:
        out = self._head + self._frame(data)
        self._head = b""
        if out:
            await self._conn.send(out)

    async def end(self, data: bytes = b"") -> None:
        out = self._head + self._frame(data)
        if self._chunked and not self._head_only:
            out += LAST_CHUNK
        self._head = b""
        self.complete = True
        self._conn.finish(self, out)

    def unstart(self) -> bool:
        if not self._head:
            return False  # the status line is on its way to the client
        self._head = b""
        self._chunked = self.sse = self.response_started = False
        return True

    async def abort(self, reason: str, data: bytes = b"") -> None:
        logger.warning("%s %s: response cut short: %s", self.method, self.path, reason)
        out = self._head + self._frame(data)
        self._head = b""
        self.keep_alive = False
        # Without chunks, a length or an error event, only a reset tells of the cut.
        self._conn.cut(out, reset=not (self._chunked or out or self._head_only))
