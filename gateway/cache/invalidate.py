"""Invalidation after unsafe methods (RFC 9111 §4.4)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.cache import policy
from gateway.cache.store import CacheStore
from gateway.errors import StoreUnavailable
from gateway.http.request import RequestInfo, request_info

if TYPE_CHECKING:
    from gateway.runtime import Runtime


async def forward_invalidating(
    app: ASGIApp, runtime: Runtime, scope: Scope, receive: Receive, send: Send
) -> None:
    """Forward a request; a non-error answer to an unsafe method invalidates the target URI and
    its same-origin Location/Content-Location in every process before the client hears it."""
    info = request_info(scope)
    route = info.route
    store: CacheStore | None = runtime.cache_store
    if route is None or not route.cache.enabled or store is None:
        await app(scope, receive, send)
        return

    async def send_invalidating(message: Message) -> None:
        if message["type"] == "http.response.start" and policy.invalidates(
            scope["method"], message["status"]
        ):
            await invalidate(runtime, scope, info, store, message.get("headers", []))
        await send(message)

    await app(scope, receive, send_invalidating)


async def invalidate(
    runtime: Runtime,
    scope: Scope,
    info: RequestInfo,
    store: CacheStore,
    response_headers: list[tuple[bytes, bytes]],
) -> None:
    """Drop every variant of each target's key; store trouble is not the client's problem."""
    raw_path = info.path
    headers = [(name.lower(), value) for name, value in response_headers]
    keys = []
    for path, query in policy.invalidation_targets(
        info.scheme, info.host, raw_path, scope.get("query_string", b""), headers
    ):
        route = info.route if path == raw_path else runtime.routes.match(path)
        if route is not None and route.cache.enabled:
            keys.append(
                policy.primary_key(
                    info.scheme,
                    info.cache_authority,
                    route.name,
                    path,
                    query,
                    route.cache.ignore_query_params,
                )
            )
    results = await asyncio.gather(*(store.invalidate(key) for key in keys), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, StoreUnavailable):
            raise result
