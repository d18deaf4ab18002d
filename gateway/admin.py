"""Admin endpoints under the reserved prefix: answered by the gateway, never forwarded."""

from __future__ import annotations

from collections.abc import Sequence

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from gateway.runtime import Runtime


def admin_routes(runtime: Runtime, extra: Sequence[BaseRoute] = ()) -> list[BaseRoute]:
    async def health(request: Request) -> Response:
        """Liveness: the process serves requests."""
        return JSONResponse({"status": "ok"})

    async def ready(request: Request) -> Response:
        """Readiness: Redis answers (or none is configured). Proxying goes on either way."""
        body: dict[str, object] = {"status": "ready", "store": "memory"}
        if runtime.pipeline is not None:
            body["store"] = "redis"
            body["circuit"] = "open" if runtime.pipeline.breaker.is_open else "closed"
            # The store's own probe: one PING under the pipeline's deadline and breaker.
            if runtime.cache_store is not None and await runtime.cache_store.ping():
                body["redis"] = "ok"
            else:
                body["redis"] = "unavailable"
                body["status"] = "degraded"
        if runtime.limiter is not None and runtime.limiter.degraded:
            body["rate_limit"] = runtime.limiter.degraded
        return JSONResponse(body, status_code=200 if body["status"] == "ready" else 503)

    async def metrics(request: Request) -> Response:
        m = runtime.metrics
        lines = [
            "# HELP gateway_responses_total Responses by route and status.",
            "# TYPE gateway_responses_total counter",
            *(
                f'gateway_responses_total{{route="{route}",status="{status}"}} {n}'
                for (route, status), n in sorted(m.responses.items())
            ),
            "# HELP gateway_cache_total Cacheable requests by cache status.",
            "# TYPE gateway_cache_total counter",
            *(f'gateway_cache_total{{status="{s}"}} {n}' for s, n in sorted(m.cache.items())),
            "# HELP gateway_ratelimit_total Rate-limit decisions.",
            "# TYPE gateway_ratelimit_total counter",
            *(f'gateway_ratelimit_total{{decision="{d}"}} {n}' for d, n in sorted(m.ratelimit.items())),
        ]
        if runtime.pipeline is not None:
            lines += [
                "# TYPE gateway_redis_commands_total counter",
                f"gateway_redis_commands_total {runtime.pipeline.commands}",
                "# TYPE gateway_redis_roundtrips_total counter",
                f"gateway_redis_roundtrips_total {runtime.pipeline.flushes}",
            ]
        return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")

    return [
        Route("/health", health, methods=["GET", "HEAD"]),
        Route("/ready", ready, methods=["GET", "HEAD"]),
        Route("/metrics", metrics, methods=["GET"]),
        *extra,
    ]
