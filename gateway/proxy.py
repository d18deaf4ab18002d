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


class ClientGone(Exception):
    """The client disconnected before its request body was complete."""


class _Body:
    """The client's request body as an async iterator, enforcing the size limit as it goes."""

    __slots__ = ("done", "limit", "receive", "seen", "too_large")

    def __init__(self, receive: Receive, limit: int) -> None:
        self.receive = receive
        self.limit = limit
        self.seen = 0
        self.done = False
        self.too_large = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while not self.done:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            chunk: bytes = message.get("body", b"")
            self.seen += len(chunk)
            if self.limit and self.seen > self.limit:
                self.too_large = True
                raise PayloadTooLarge(f"The request body exceeds {self.limit} bytes.")
            self.done = not message.get("more_body", False)
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
        body = _Body(receive, settings.max_body_bytes) if size != 0 else None
        if size:
            headers.append((b"content-length", str(size).encode()))
        try:
            response = await self.runtime.upstream.request(
                scope["method"], upstream.origin, target, headers,
                body.__aiter__() if body is not None else None,
            )
        except GatewayError:
            if body is not None and body.too_large:
                raise PayloadTooLarge(f"The request body exceeds {body.limit} bytes.") from None
            raise
        except ClientGone:
            return
        await self._relay(response, scope, receive, send, body)

    async def _relay(
        self, response: UpstreamResponse, scope: Scope, receive: Receive, send: Send,
        body: _Body | None,
    ) -> None:
        watcher: asyncio.Task[None] | None = None
        try:
            await send({
                "type": "http.response.start", "status": response.status,
                "headers": response_headers(response.headers),
            })
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
                        watcher = asyncio.create_task(
                            _cancel_on_disconnect(receive, asyncio.current_task())
                        )
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
