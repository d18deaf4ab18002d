"""Drive an ASGI app in the test's own event loop: the client side of one HTTP exchange.

The client is scripted message by message, so tests can hang up at an exact point (before the
first response chunk, mid-body, mid-upload) and see every message the app sent, which a real
socket would hide. Used for the gateway's composed app (`create_app`) with its lifespan open.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.types import ASGIApp, Message, Scope

from gateway.app import create_app
from gateway.environment import settings_from_env

RawHeaders = list[tuple[bytes, bytes]]


class Exchange:
    """One request as the client sends it and the response messages as the app sent them."""

    def __init__(
        self,
        method: str,
        target: str,
        headers: Sequence[tuple[bytes, bytes]],
        body: Sequence[bytes] | None,
    ) -> None:
        path, _, query = target.partition("?")
        self.scope: Scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": query.encode(),
            "root_path": "",
            "headers": [(b"host", b"gateway.test"), *headers],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8080),
            "state": {},
        }
        self._incoming: asyncio.Queue[Message] = asyncio.Queue()
        chunks = [] if body is None else list(body) or [b""]  # None: the test sends it
        for i, chunk in enumerate(chunks):
            more = i < len(chunks) - 1
            self._incoming.put_nowait({"type": "http.request", "body": chunk, "more_body": more})
        self._gone = False
        self.sent: list[Message] = []
        self._changed = asyncio.Event()

    # -- the client's side ---------------------------------------------------------------------

    def send_body(self, chunk: bytes, more: bool) -> None:
        self._incoming.put_nowait({"type": "http.request", "body": chunk, "more_body": more})

    def hang_up(self) -> None:
        """The client disconnects: every receive() from now on says so (ASGI)."""
        self._gone = True
        self._incoming.put_nowait({"type": "http.disconnect"})

    async def receive(self) -> Message:
        if self._gone and self._incoming.empty():
            return {"type": "http.disconnect"}
        return await self._incoming.get()

    async def send(self, message: Message) -> None:
        self.sent.append(message)
        self._changed.set()

    async def wait_for(self, condition: Callable[[], bool], timeout: float = 10) -> None:
        """Wait until `condition()` holds after some message the app sent."""
        async with asyncio.timeout(timeout):
            while not condition():
                self._changed.clear()
                await self._changed.wait()

    # -- what the app sent ---------------------------------------------------------------------

    @property
    def start(self) -> Message | None:
        return next((m for m in self.sent if m["type"] == "http.response.start"), None)

    @property
    def status(self) -> int:
        assert self.start is not None, "no response started"
        status: int = self.start["status"]
        return status

    @property
    def headers(self) -> RawHeaders:
        assert self.start is not None, "no response started"
        return list(self.start["headers"])

    def header(self, name: bytes) -> bytes | None:
        return next((v for k, v in self.headers if k.lower() == name), None)

    @property
    def chunks(self) -> list[bytes]:
        return [m.get("body", b"") for m in self.sent if m["type"] == "http.response.body"]

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)

    @property
    def complete(self) -> bool:
        """The app sent its last body message (more_body=False): the response ended normally."""
        return any(m["type"] == "http.response.body" and not m.get("more_body", False) for m in self.sent)


class InProcessGateway:
    """The gateway's composed app, its lifespan open, called in the test's own event loop."""

    def __init__(self, app: Starlette) -> None:
        self.app: ASGIApp = app

    def exchange(
        self,
        method: str = "GET",
        target: str = "/",
        headers: Sequence[tuple[bytes, bytes]] = (),
        body: Sequence[bytes] | None = (),
    ) -> Exchange:
        """An exchange to `run`; with `body=None` the test sends the body (`send_body`)."""
        return Exchange(method, target, headers, body)

    def run(self, exchange: Exchange) -> asyncio.Task[None]:
        """Start the app on `exchange`; the task ends when the app returns (or raises)."""

        async def call() -> None:
            await self.app(exchange.scope, exchange.receive, exchange.send)

        return asyncio.create_task(call())

    async def request(
        self,
        method: str = "GET",
        target: str = "/",
        headers: Sequence[tuple[bytes, bytes]] = (),
        body: Sequence[bytes] = (),
        timeout: float = 10,
    ) -> Exchange:
        """One complete exchange with a client that stays until the response ended."""
        exchange = self.exchange(method, target, headers, body)
        async with asyncio.timeout(timeout):
            await self.run(exchange)
        return exchange


@contextlib.asynccontextmanager
async def in_process_gateway(upstream_url: str, **env: Any) -> AsyncIterator[InProcessGateway]:
    """`create_app` from GATEWAY_* variables (cache off unless given), lifespan open."""
    settings = settings_from_env(
        {
            "GATEWAY_UPSTREAM_URL": upstream_url,
            "GATEWAY_CACHE_ENABLED": "false",
            "GATEWAY_ACCESS_LOG": "false",
            **{k: str(v) for k, v in env.items()},
        }
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        yield InProcessGateway(app)
