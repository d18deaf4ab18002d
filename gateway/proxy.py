"""The innermost app: forward one request to its route's upstream and stream the answer back.

Bodies stream both ways with bounded memory. The upstream response is always closed, also when
the client goes away mid-stream; the gateway's own failures become small problem+json answers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from starlette.types import Receive, Scope, Send

from gateway.errors import GatewayError, NotFound, PayloadTooLarge
from gateway.http.headers import response_headers
from gateway.http.request import request_info
from gateway.runtime import Runtime
from gateway.upstream import UpstreamResponse

#: Methods whose request body is read and dropped, never forwarded.
_BODILESS = frozenset({"GET", "HEAD"})


class ClientGone(Exception):
    """The client disconnected before its request body was complete."""


class _Body:
    """The client's request body, enforcing the size limit as it goes.

    `buffer()` receives up to the request-buffer size before anything is sent upstream, so a
    slow client cannot hold an upstream connection while its small body trickles in (nginx's
    request buffering); whatever does not fit streams on through `rest()`.
    """

    __slots__ = ("done", "limit", "receive", "seen", "too_large")

    def __init__(self, receive: Receive, limit: int) -> None:
        self.receive = receive
        self.limit = limit
        self.seen = 0
        self.done = False
        self.too_large = False

    async def next(self) -> bytes:
        message = await self.receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk: bytes = message.get("body", b"")
        self.seen += len(chunk)
        if self.limit and self.seen > self.limit:
            self.too_large = True
            raise PayloadTooLarge(f"The request body exceeds {self.limit} bytes.")
        self.done = not message.get("more_body", False)
        return chunk

    async def buffer(self, size: int) -> bytes:
        """Receive until the body is complete or more than `size` bytes are in hand."""
        parts: list[bytes] = []
        held = 0
        if size <= 0:
            return b""
        while not self.done and held <= size:
            chunk = await self.next()
            if chunk:
                parts.append(chunk)
                held += len(chunk)
        return b"".join(parts)

    async def drain(self) -> None:
        """Read and drop the whole body (still within the size limit)."""
        while not self.done:
            await self.next()

    async def rest(self, first: bytes) -> AsyncIterator[bytes]:
        if first:
            yield first
        while not self.done:
            chunk = await self.next()
            if chunk:
                yield chunk


class ProxyApp:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        info = request_info(scope)
        route = info.route
        if route is None:
            raise NotFound("No route matches this path.")
        settings = self.runtime.settings
        size = info.body_length
        if size is not None and settings.max_body_bytes and size > settings.max_body_bytes:
            raise PayloadTooLarge(f"The request body exceeds {settings.max_body_bytes} bytes.")
        upstream, path = self.runtime.routes.target(route, info.path)
        query: bytes = scope.get("query_string", b"")
        target = path + b"?" + query if query else path
        # The list the context layer computed (an inner layer may have added conditional
        # fields to it); only the upstream's Host and the body's length are added here.
        headers = [*scope["headers"], (b"host", upstream.host)]
        body: _Body | None = None
        content: bytes | AsyncIterator[bytes] | None = None
        if size != 0:
            body = _Body(receive, settings.max_body_bytes)
            try:
                if scope["method"] in _BODILESS:
                    # Never forwarded (as Varnish does): the answer, which the cache may store,
                    # must not depend on a body other clients would not send.
                    await body.drain()
                else:
                    first = await body.buffer(settings.request_buffer_bytes)
                    if body.done:
                        content = first or None
                        size = len(first)
                    else:
                        content = body.rest(first)
            except ClientGone:
                return
            if content is None:
                size = None
        if size is not None and size > 0:
            headers.append((b"content-length", str(size).encode()))
        try:
            response = await self.runtime.upstream.request(
                scope["method"], upstream.origin, target, headers, content
            )
        except GatewayError:
            if body is not None and body.too_large:
                raise PayloadTooLarge(f"The request body exceeds {body.limit} bytes.") from None
            raise
        except ClientGone:
            return
        await self._relay(response, scope, receive, send, body)

    async def _relay(
        self,
        response: UpstreamResponse,
        scope: Scope,
        receive: Receive,
        send: Send,
        body: _Body | None,
    ) -> None:
        watcher: asyncio.Task[None] | None = None
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status,
                    "headers": response_headers(response.headers),
                }
            )
            last = b""
            if scope["method"] != "HEAD":
                read = response.read
                while chunk := await read():
                    if response.at_eof():  # the final chunk goes out with more_body=False
                        last = chunk
                        break
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                    if watcher is None and (body is None or body.done):
                        # A long stream: watch for the client leaving so the upstream is not
                        # read to the end for nobody. Short answers never pay for this task.
                        watcher = asyncio.create_task(_cancel_on_disconnect(receive, asyncio.current_task()))
            if watcher is not None:
                watcher.cancel()
            await send({"type": "http.response.body", "body": last})
        except asyncio.CancelledError:
            if watcher is None or not watcher.done() or watcher.cancelled():
                raise
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()  # we asked for this cancellation: the client is gone
        finally:
            if watcher is not None and not watcher.done():
                watcher.cancel()
            response.close()


async def _cancel_on_disconnect(receive: Receive, task: asyncio.Task[object] | None) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass  # a body-less request still yields its one empty http.request message first
    if task is not None:
        task.cancel()
