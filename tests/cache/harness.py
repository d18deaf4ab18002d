"""Drive `CacheMiddleware` directly: a fake upstream ASGI app that counts what reaches it, a
fake clock, and a tiny client that builds the scope the context middleware would."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from types import SimpleNamespace
from typing import Any

from starlette.types import Message, Receive, Scope, Send

from gateway.cache.memory_store import MemoryCacheStore
from gateway.cache.middleware import CacheMiddleware
from gateway.config import CacheSettings, Route, Settings
from gateway.http.dates import format_http_date
from gateway.http.request import RequestInfo
from gateway.routing import RouteTable

Headers = list[tuple[bytes, bytes]]
START = 1_700_000_000.0


class FakeClock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Reply:
    status: int = 200
    headers: Headers = field(default_factory=lambda: [(b"cache-control", b"max-age=60")])
    body: bytes = b"hello"
    chunks: int = 1
    delay: float = 0.0
    raises: BaseException | None = None
    length: bool = True  # send a Content-Length (else the body's length is unknown upfront)


@dataclass
class Seen:
    method: str
    path: str
    query: bytes
    headers: Headers

    def header(self, name: bytes) -> bytes | None:
        return next((v for k, v in self.headers if k == name), None)


class Upstream:
    """The proxy's stand-in: answers with `reply` (or what `script` returns) and counts calls.
    It sends the origin's Date (from the fake clock) unless the reply has one."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.reply = Reply()
        self.script: Callable[[Seen], Reply] | None = None
        self.seen: list[Seen] = []

    @property
    def calls(self) -> int:
        return len(self.seen)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        seen = Seen(scope["method"], scope["path"], scope.get("query_string", b""), list(scope["headers"]))
        self.seen.append(seen)
        reply = self.script(seen) if self.script else self.reply
        if reply.delay:
            await asyncio.sleep(reply.delay)
        if reply.raises is not None:
            raise reply.raises
        headers = list(reply.headers)
        if not any(k == b"date" for k, _ in headers):
            headers.append((b"date", format_http_date(self.clock())))
        if reply.length and not any(k == b"content-length" for k, _ in headers):
            headers.append((b"content-length", str(len(reply.body)).encode()))
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        body = b"" if scope["method"] == "HEAD" else reply.body
        size = max(1, len(body) // reply.chunks)
        parts = [body[i : i + size] for i in range(0, len(body), size)] or [b""]
        for index, part in enumerate(parts):
            more = index < len(parts) - 1
            await send({"type": "http.response.body", "body": part, "more_body": more})


@dataclass
class Response:
    status: int
    headers: Headers
    body: bytes
    info: Any = None

    def header(self, name: str) -> str | None:
        raw = name.lower().encode()
        value = next((v for k, v in self.headers if k == raw), None)
        return None if value is None else value.decode("latin-1")

    def all(self, name: str) -> list[str]:
        raw = name.lower().encode()
        return [v.decode("latin-1") for k, v in self.headers if k == raw]

    @property
    def x_cache(self) -> str | None:
        return self.header("x-cache")


class Gateway:
    """The cache middleware in front of an `Upstream`, with one route "api" on "/"."""

    def __init__(
        self,
        store: Any = None,
        *,
        routes: Sequence[Route] | None = None,
        tee_bytes: int = 64 * 1024 * 1024,
        **settings: Any,
    ) -> None:
        self.clock = FakeClock()
        self.store = store if store is not None else MemoryCacheStore(clock=self.clock)
        self.upstream = Upstream(self.clock)
        cache = CacheSettings(**settings)
        self.route = Route("api", "/", ("http://upstream.test",), cache=cache)
        self.routes = [*(routes or []), self.route]
        self.runtime = SimpleNamespace(
            cache_store=self.store,
            routes=RouteTable(self.routes),
            settings=Settings(routes=tuple(self.routes), cache_tee_bytes=tee_bytes),
        )
        self.app = CacheMiddleware(self.upstream, self.runtime, clock=self.clock)  # type: ignore[arg-type]
        self.on_message: Callable[[Message], Awaitable[None]] | None = None

    def scope(
        self,
        method: str = "GET",
        target: str = "/a",
        headers: Headers | None = None,
        host: str = "example.com",
    ) -> Scope:
        path, _, query = target.partition("?")
        route = next(
            (r for r in sorted(self.routes, key=lambda r: -len(r.prefix)) if path.startswith(r.prefix)),
            None,
        )
        all_headers = [(b"host", host.encode()), *(headers or [])]
        info = RequestInfo(
            request_id="req-1",
            route=route,
            path=path.encode(),
            client_ip="127.0.0.1",
            peer_ip="127.0.0.1",
            peer_trusted=False,
            scheme="http",
            host=host,
            forwarded_for=b"127.0.0.1",
            headers=all_headers,
        )
        return {
            "type": "http",
            "method": method,
            "path": path,
            "raw_path": path.encode(),
            "query_string": query.encode(),
            "headers": all_headers,
            "scheme": "http",
            "gateway": info,
        }

    async def request(
        self,
        method: str = "GET",
        target: str = "/a",
        headers: Headers | None = None,
        *,
        prefetch: bool = False,
        host: str = "example.com",
    ) -> Response:
        scope = self.scope(method, target, headers, host)
        if prefetch:
            self.app.prefetch(scope)
        return await self.run(scope)

    async def run(self, scope: Scope) -> Response:
        response = Response(0, [], b"", scope["gateway"])
        sent_request = False

        async def receive() -> Message:
            nonlocal sent_request
            if not sent_request:
                sent_request = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await asyncio.Event().wait()
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            if self.on_message is not None:
                await self.on_message(message)
            if message["type"] == "http.response.start":
                response.status = message["status"]
                response.headers = list(message.get("headers", []))
            else:
                response.body += message.get("body", b"")

        await self.app(scope, receive, send)
        return response

    def settings(self, **changes: Any) -> None:
        self.route = replace(self.route, cache=replace(self.route.cache, **changes))
        self.routes[-1] = self.route


async def settle() -> None:
    """Let background tasks (stale-while-revalidate refreshes) run to completion."""
    for _ in range(20):
        await asyncio.sleep(0)
