"""Composition root: the middleware order, the lifespan that owns every client, admin routes.

The request path, written once:
    RequestContext -> RedisState -> RateLimit -> Cache -> ProxyDispatch -> proxy
                                                                        -> router (admin)
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.middleware import Middleware
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
from gateway.proxy import ProxyApp
from gateway.ratelimit.limiter import RedisLimiter
from gateway.ratelimit.middleware import RateLimitMiddleware
from gateway.ratelimit.policy import compile_policies
from gateway.redis_client import close_redis, create_pipeline, create_redis, describe
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
        info = scope.get("gateway")
        if info is not None and info.route is not None:
            await self.proxy(scope, receive, send)
        else:
            await self.app(scope, receive, send)


class GatewayApp(Starlette):
    """Starlette without its outer ServerErrorMiddleware: RequestContextMiddleware is the
    outermost layer and already answers any unhandled error with a problem+json 500."""

    def build_middleware_stack(self) -> ASGIApp:
        app: ASGIApp = ExceptionMiddleware(self.router, debug=self.debug)
        for cls, args, kwargs in reversed(self.user_middleware):
            app = cls(app, *args, **kwargs)
        return app


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
    middleware = [
        Middleware(RequestContextMiddleware, runtime=runtime),
        Middleware(RedisStateMiddleware, runtime=runtime),
        Middleware(RateLimitMiddleware, runtime=runtime),
        Middleware(CacheMiddleware, runtime=runtime),
        Middleware(ProxyDispatch, proxy=proxy),
    ]
    purge = Route("/purge", purge_endpoint(runtime), methods=["POST"])
    routes = [
        Mount(settings.admin_prefix, routes=admin_routes(runtime, extra=[purge])),
        Mount("", app=proxy),  # unrouted paths: ProxyApp answers a 404 problem
    ]
    app = GatewayApp(routes=routes, middleware=middleware, lifespan=lifespan)
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
        # runtime.limiter stays None: the rate-limit layer then counts in-process.
        log.warning(
            "no Redis configured: using the embedded in-process store; "
            "cache and rate limits are per process"
        )


async def _close(runtime: Runtime) -> None:
    if runtime.upstream is not None:
        await runtime.upstream.aclose()
    if runtime.pipeline is not None:
        await runtime.pipeline.aclose()
    if runtime.redis is not None:
        await close_redis(runtime.redis)


def validate(settings: Settings) -> None:
    """Checks that need the layers above config (limit syntax); raise ConfigError."""
    compile_policies(settings)
