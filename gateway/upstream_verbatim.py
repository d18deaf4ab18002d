"""The upstream hop for the rare request aiohttp cannot send verbatim.

aiohttp encodes header values as UTF-8, so a value carrying other bytes above 0x7F (RFC 9110
obs-text, e.g. Latin-1) would be altered. Such requests go through httpx's transport instead,
which writes header bytes exactly as received. It is used at the transport level: no cookie
jar, no redirects, no environment proxies. This module is the boundary for httpx's errors.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import httpx

from gateway.errors import BadGateway, GatewayTimeout


class _VerbatimResponse:
    __slots__ = ("_chunks", "_eof", "_response", "headers", "status")

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self.status = response.status_code
        self.headers = [(k.lower(), v) for k, v in response.headers.raw]
        stream = response.stream
        assert isinstance(stream, httpx.AsyncByteStream)
        self._chunks = stream.__aiter__()
        self._eof = False

    async def read(self) -> bytes:
        while not self._eof:
            try:
                chunk = await self._chunks.__anext__()
            except StopAsyncIteration:
                self._eof = True
                break
            except httpx.TransportError as exc:
                raise BadGateway("The upstream connection failed mid-response.") from exc
            if chunk:
                return chunk
        return b""

    def at_eof(self) -> bool:
        return self._eof

    def close(self) -> None:
        # httpx closes asynchronously; the pool gets the connection back (or drops it) soon.
        task = asyncio.get_running_loop().create_task(self._response.aclose())
        task.add_done_callback(lambda t: t.cancelled() or t.exception())


class VerbatimUpstream:
    """Sends a request with its header bytes exactly as given (httpx transport, no client)."""

    def __init__(self, connect_timeout: float, max_connections: int) -> None:
        self._timeout = {"connect": connect_timeout, "read": None, "write": None, "pool": None}
        self._transport = httpx.AsyncHTTPTransport(
            limits=httpx.Limits(max_connections=max_connections), trust_env=False, retries=0
        )

    async def request(
        self,
        method: str,
        origin: str,
        target: bytes,
        headers: Sequence[tuple[bytes, bytes]],
        body: bytes | AsyncIterator[bytes] | None,
    ) -> _VerbatimResponse:
        url = httpx.URL(origin).copy_with(raw_path=target)
        request = httpx.Request(
            method,
            url,
            headers=list(headers),
            content=body,
            extensions={"timeout": self._timeout},
        )
        try:
            response = await self._transport.handle_async_request(request)
        except httpx.TimeoutException:
            raise GatewayTimeout("The upstream server did not answer in time.") from None
        except httpx.TransportError as exc:
            raise BadGateway("The upstream server could not be reached.") from exc
        return _VerbatimResponse(response)

    async def aclose(self) -> None:
        await self._transport.aclose()
