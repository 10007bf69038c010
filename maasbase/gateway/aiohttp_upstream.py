"""The upstream seam on aiohttp's ClientSession: a second implementation of
``upstream.UpstreamClient``, for comparison in the benchmark and for upstreams that need
what aiohttp adds (HTTP proxies from the environment, redirects)."""

from __future__ import annotations

import aiohttp

from maasbase.gateway.errors import UpstreamFailed, UpstreamTimeout, UpstreamTooLarge
from maasbase.gateway.upstream import MAX_RESPONSE_BYTES, Headers


class AiohttpResponse:
    def __init__(self, response: aiohttp.ClientResponse, url: str, max_body: int) -> None:
        self._response = response
        self._url = url
        self._max_body = max_body
        self._received = 0
        self.status = response.status
        self.headers = [(k.lower(), v) for k, v in response.raw_headers]

    async def read(self) -> bytes:
        parts = []
        while chunk := await self.next_chunk():
            parts.append(chunk)
        return b"".join(parts)

    async def next_chunk(self) -> bytes:
        try:
            chunk = await self._response.content.readany()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _translate(exc, self._url) from exc
        self._received += len(chunk)
        if self._received > self._max_body:
            self._response.close()
            raise UpstreamTooLarge(
                f"the model server's answer is larger than {self._max_body} bytes, the "
                "gateway's max_response_bytes; ask for less (max_tokens, fewer inputs)"
            )
        return chunk

    def release(self) -> None:
        if self._response.content.at_eof():
            self._response.release()
        else:
            self._response.close()


def _translate(exc: Exception, url: str) -> UpstreamFailed:
    if isinstance(exc, TimeoutError):
        return UpstreamTimeout(f"{url} timed out ({exc!r})")
    return UpstreamFailed(f"{url} failed ({exc!r})")


class AiohttpUpstreamClient:
    def __init__(
        self,
        *,
        connect_timeout: float = 10.0,
        read_timeout: float = 600.0,
        trust_env: bool = False,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
    ) -> None:
        self._max_body = max_response_bytes
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=connect_timeout, sock_read=read_timeout
        )
        self._trust_env = trust_env
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=4.0),
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
                timeout=self._timeout,
                skip_auto_headers=("User-Agent", "Accept-Encoding"),
                trust_env=self._trust_env,
            )
        return self._session

    async def request(
        self, method: bytes, url: str, headers: Headers, body: bytes
    ) -> AiohttpResponse:
        try:
            response = await self._get_session().request(
                method.decode(),
                url,
                data=body,
                headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers],
                allow_redirects=False,
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _translate(exc, url) from exc
        return AiohttpResponse(response, url, self._max_body)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
