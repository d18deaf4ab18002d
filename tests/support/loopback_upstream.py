"""A scriptable upstream in the test's own event loop: aiohttp.web on a loopback port.

Each test sets `handler` to say exactly how the upstream answers (stream, stall, reset) and
reads back what it received: the raw request line target, the raw header bytes, the body.
Used with `tests/support/asgi.py` to exercise the proxy's streaming and failure paths
in-process, without gateway subprocesses.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

RawHeaders = list[tuple[bytes, bytes]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Received:
    method: str
    raw_path: str
    headers: RawHeaders
    body: bytearray = field(default_factory=bytearray)
    complete: bool = False  # the whole body arrived

    def header(self, name: bytes) -> bytes | None:
        return next((v for k, v in self.headers if k.lower() == name), None)


async def ok(request: web.Request) -> web.StreamResponse:
    return web.Response(body=b"ok", content_type="text/plain")


class LoopbackUpstream:
    def __init__(self) -> None:
        self.handler: Handler = ok
        self.received: list[Received] = []
        self.handler_errors = 0  # handlers that ended in an exception (a cut-off body, ...)
        self.release = asyncio.Event()  # set at close: handlers that wait on it return
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> LoopbackUpstream:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        # handler_cancellation: a handler is cancelled when the proxy drops its connection,
        # which is how the tests see the upstream released.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def close(self) -> None:
        self.release.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        self.received.append(Received(request.method, request.raw_path, list(request.raw_headers)))
        try:
            return await self.handler(request)
        except BaseException:
            self.handler_errors += 1
            raise

    async def read_body(self, request: web.Request) -> Received:
        """Read the request body into the last `Received` as it arrives."""
        seen = self.received[-1]
        async for chunk in request.content.iter_any():
            seen.body += chunk
        seen.complete = True
        return seen


async def stream_until_gone(
    request: web.Request, gone: asyncio.Event, interval: float = 0.01, limit: int = 2000
) -> web.StreamResponse:
    """Send numbered chunks until the proxy drops the connection (sets `gone`) or `limit`."""
    response = web.StreamResponse(headers={"Content-Type": "text/plain"})
    await response.prepare(request)
    try:
        for i in range(limit):
            await response.write(b"chunk %d\n" % i)
            await asyncio.sleep(interval)
    except ConnectionResetError:  # aiohttp's ClientConnectionResetError is one
        gone.set()
    except asyncio.CancelledError:  # the connection was lost between two writes
        gone.set()
        raise
    return response


async def stall_until_gone(request: web.Request, gone: asyncio.Event) -> web.StreamResponse:
    """Never answer (or, after `prepare`, never send a body byte) until the proxy leaves."""
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        gone.set()
        raise
    raise AssertionError("unreachable")
