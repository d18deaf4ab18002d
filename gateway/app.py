"""Composition root: the middleware order, the lifespan that owns every client, admin routes.

The request path, written once:
    RequestContext -> RedisState -> RateLimit -> Cache -> ProxyDispatch -> proxy
                                                                        -> router (admin)
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.admin import admin_routes
from gateway.cache.memory_store import MemoryCacheStore
from gateway.cache.middleware import CacheMiddleware
from gateway.cache.purge import purge_endpoint
from gateway.cache.redis_store import RedisCacheStore
from gateway.config import Settings
from gateway.context import RedisStateMiddleware, RequestContextMiddleware
from gateway.http.request import request_info
from gateway.proxy import ProxyApp
from gateway.ratelimit.limiter import RedisLimiter
from gateway.ratelimit.middleware import RateLimitMiddleware
from gateway.ratelimit.policy import compile_policies
from gateway.redis_client import close_redis, create_pipeline, create_redis, describe
from gateway.redis_status import check_redis_versions
from gateway.runtime import Runtime
from gateway.upstream import AiohttpUpstream

log = logging.getLogger("gateway")


class ProxyDispatch:
    """Last layer before the router: routed requests go straight to the proxy.

    Proxied requests are the hot path; Starlette's router, Mount matching and per-route
    exception wrapping add nothing for them, so only admin paths (and paths no route claims,
    which get a 404 problem) continue to the router.
    """

    def __init__(self, app: ASGIApp, proxy: ASGIApp) -> None:
        self.app = app
        self.proxy = proxy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        info = request_info(scope)
        if info.route is not None or not info.admin:
            # Routed requests, and requests the admin API must not answer on this listener
            # (the proxy answers those, having no route, with a 404).
            await self.proxy(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def build_stack(runtime: Runtime, proxy: ASGIApp, router: ASGIApp) -> ASGIApp:
    """The request path, outermost first. The rate limiter is handed the cache's `prefetch`
    so a request's cache lookup leaves in the same Redis round trip as its rate-limit script
    (tests/test_app.py pins this order and the wiring)."""
    cache = CacheMiddleware(ProxyDispatch(router, proxy=proxy), runtime=runtime)
    limit = RateLimitMiddleware(cache, runtime=runtime, prefetch=cache.prefetch)
    return RequestContextMiddleware(RedisStateMiddleware(limit, runtime=runtime), runtime=runtime)


class GatewayApp(Starlette):
    """Starlette without its outer ServerErrorMiddleware: RequestContextMiddleware is the
    outermost layer and already answers any unhandled error with a problem+json 500."""

    def __init__(self, runtime: Runtime, proxy: ASGIApp, **kwargs: Any) -> None:
        self.runtime = runtime
        self.proxy = proxy
        super().__init__(**kwargs)

    def build_middleware_stack(self) -> ASGIApp:
        router: ASGIApp = ExceptionMiddleware(self.router, debug=self.debug)
        return build_stack(self.runtime, self.proxy, router)


def create_app(settings: Settings) -> Starlette:
    runtime = Runtime(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await _open(runtime)
        try:
            yield
        finally:
            await _close(runtime)

    proxy = ProxyApp(runtime)
    purge = Route("/purge", purge_endpoint(runtime), methods=["POST"])
    routes = [
        Mount(settings.admin_prefix, routes=admin_routes(runtime, extra=[purge])),
        Mount("", app=proxy),  # unrouted paths: ProxyApp answers a 404 problem
    ]
    app = GatewayApp(runtime, proxy, routes=routes, lifespan=lifespan)
    app.state.runtime = runtime
    return app


async def _open(runtime: Runtime) -> None:
    settings = runtime.settings
    runtime.upstream = AiohttpUpstream(
        connect_timeout=settings.upstream_connect_timeout,
        timeout=settings.upstream_timeout,
        max_connections=settings.upstream_max_connections,
    )
    if settings.redis.configured:
        runtime.redis = create_redis(settings.redis)
        runtime.pipeline = create_pipeline(runtime.redis, settings.redis)
        runtime.cache_store = RedisCacheStore(runtime.redis, runtime.pipeline)
        runtime.limiter = RedisLimiter(runtime.pipeline)
        log.info("using redis at %s", describe(settings.redis))
    else:
        runtime.cache_store = MemoryCacheStore(max_bytes=settings.cache_memory_bytes)
        # runtime.limiter stays None (unless the counters have their own Redis, below): the
        # rate-limit layer then counts in-process.
        log.warning(
            "no Redis configured: using the embedded in-process store; cache and rate limits are per process"
        )
    counters = settings.counters_redis
    if counters is not None:
        # The counters on their own Redis (noeviction): cache writes can never evict them. Its
        # own pool, deadline and breaker; the cache lookup and the decision then leave in two
        # flushes that run side by side (two parallel waits, not one after the other).
        runtime.counters_redis = create_redis(counters)
        runtime.counters_pipeline = create_pipeline(runtime.counters_redis, counters)
        runtime.limiter = RedisLimiter(runtime.counters_pipeline)
        log.info("rate-limit counters in redis at %s", describe(counters))
    await check_redis_versions(runtime)


async def _close(runtime: Runtime) -> None:
    if runtime.opened:
        await runtime.upstream.aclose()
    for pipeline in (runtime.pipeline, runtime.counters_pipeline):
        if pipeline is not None:
            await pipeline.aclose()
    for client in (runtime.redis, runtime.counters_redis):
        if client is not None:
            await close_redis(client)


def validate(settings: Settings) -> None:
    """Checks that need the layers above config (limit syntax); raise ConfigError."""
    compile_policies(settings)
