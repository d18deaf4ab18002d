"""The composed app in-process: middleware order, request.state.redis, admin routes."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.context import RedisStateMiddleware
from gateway.environment import settings_from_env
from gateway.runtime import Runtime
from tests.support.redis_server import RedisServer


def test_handlers_see_the_shared_redis_client_on_request_state(redis_server: RedisServer) -> None:
    settings = settings_from_env(
        {
            "GATEWAY_UPSTREAM_URL": "http://127.0.0.1:1",
            "REDIS_HOST": redis_server.host,
            "REDIS_PORT": str(redis_server.port),
        }
    )
    runtime = Runtime(settings)
    runtime.redis = object()  # type: ignore[assignment]  # any shared client object

    async def handler(request: Request) -> PlainTextResponse:
        return PlainTextResponse("same" if request.state.redis is runtime.redis else "other")

    app = Starlette(routes=[Route("/", handler)])
    app.add_middleware(RedisStateMiddleware, runtime=runtime)
    with TestClient(app) as client:
        assert client.get("/").text == "same"


def test_the_lifespan_opens_one_redis_client_and_admin_routes_answer(
    redis_server: RedisServer,
) -> None:
    if not redis_server.ping():
        redis_server.start()
    settings = settings_from_env(
        {
            "GATEWAY_UPSTREAM_URL": "http://127.0.0.1:1",
            "REDIS_HOST": redis_server.host,
            "REDIS_PORT": str(redis_server.port),
        }
    )
    app = create_app(settings)
    runtime: Runtime = app.state.runtime
    with TestClient(app) as client:
        assert runtime.redis is not None and runtime.pipeline is not None
        assert client.get("/__gateway/health").json() == {"status": "ok"}
        ready = client.get("/__gateway/ready")
        assert ready.status_code == 200 and ready.json()["redis"] == "ok"
        metrics = client.get("/__gateway/metrics").text
        assert 'gateway_responses_total{route="admin",status="200"}' in metrics
        # the proxy answers an unreachable upstream with a problem, never a 500
        response = client.get("/anything")
        assert response.status_code == 502
        assert response.headers["content-type"] == "application/problem+json"
    assert runtime.opened  # closed in the lifespan's exit


def test_paths_no_route_claims_get_a_404_problem() -> None:
    import json
    from pathlib import Path
    from tempfile import TemporaryDirectory

    with TemporaryDirectory() as tmp:
        path = Path(tmp) / "routes.json"
        path.write_text(json.dumps({"routes": [{"prefix": "/api", "upstream": "http://127.0.0.1:1"}]}))
        app = create_app(settings_from_env({"GATEWAY_ROUTES_FILE": str(path)}))
        with TestClient(app) as client:
            response = client.get("/elsewhere")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"


def test_the_stack_order_and_the_rate_limit_to_cache_prefetch_wiring_are_pinned() -> None:
    """Reordering the layers, or putting one between the rate limiter and the cache, would
    silently lose the shared Redis round trip (the limiter would prefetch for a cache that is
    not the next layer): this fails first."""
    from starlette.middleware.exceptions import ExceptionMiddleware

    from gateway.app import ProxyDispatch
    from gateway.cache.middleware import CacheMiddleware
    from gateway.context import RequestContextMiddleware
    from gateway.ratelimit.middleware import RateLimitMiddleware

    app = create_app(settings_from_env({"GATEWAY_UPSTREAM_URL": "http://127.0.0.1:1"}))
    with TestClient(app):
        layer = app.middleware_stack
    chain = []
    while layer is not None and not isinstance(layer, ExceptionMiddleware):
        chain.append(layer)
        layer = getattr(layer, "app", None)
    assert [type(x) for x in chain] == [
        RequestContextMiddleware,
        RedisStateMiddleware,
        RateLimitMiddleware,
        CacheMiddleware,
        ProxyDispatch,
    ]
    limiter, cache = chain[2], chain[3]
    assert isinstance(limiter, RateLimitMiddleware) and isinstance(cache, CacheMiddleware)
    prefetch = limiter.prefetch
    assert prefetch is not None and getattr(prefetch, "__self__", None) is cache
    assert limiter.app is cache  # nothing in between
