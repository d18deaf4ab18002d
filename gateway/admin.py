"""Admin endpoints under the reserved prefix: answered by the gateway, never forwarded."""

from __future__ import annotations

import time
from collections.abc import Sequence

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from gateway.admin_auth import client_key
from gateway.errors import GatewayError, problem_body
from gateway.redis_status import check_redis_versions
from gateway.runtime import Runtime


def admin_routes(runtime: Runtime, extra: Sequence[BaseRoute] = ()) -> list[BaseRoute]:
    async def health(request: Request) -> Response:
        """Liveness: the process serves requests."""
        return JSONResponse({"status": "ok"})

    async def ready(request: Request) -> Response:
        """Readiness: Redis answers (or none is configured). Proxying goes on either way."""
        body: dict[str, object] = {"status": "ready", "store": "memory"}
        answering = True
        if runtime.pipeline is not None:
            body["store"] = "redis"
            body["circuit"] = "open" if runtime.pipeline.breaker.is_open else "closed"
            # The store's own probe: one PING under the pipeline's deadline and breaker.
            if runtime.cache_store is not None and await runtime.cache_store.ping():
                body["redis"] = "ok"
            else:
                body["redis"] = "unavailable"
                body["status"] = "degraded"
                answering = False
        if runtime.counters_pipeline is not None:
            try:
                up = bool(await runtime.counters_pipeline.execute("PING"))
            except GatewayError:
                up = False
            body["counters_redis"] = "ok" if up else "unavailable"
            if not up:
                body["status"] = "degraded"
                answering = False
        if answering and len(runtime.redis_verdicts) < _redis_count(runtime):
            await check_redis_versions(runtime)  # unknown at start-up; Redis answers now
        for label, field in (("redis", "redis"), ("counters redis", "counters_redis")):
            found = runtime.redis_verdicts.get(label)
            if found is not None:
                body[f"{field}_server"] = found.product
                body[f"{field}_version"] = found.version
                body[f"{field}_security"] = found.security
        if runtime.limiter is not None and runtime.limiter.degraded:
            body["rate_limit"] = runtime.limiter.degraded
        return JSONResponse(body, status_code=200 if body["status"] == "ready" else 503)

    async def metrics(request: Request) -> Response:
        token = runtime.settings.metrics_token
        if token is not None:
            try:
                runtime.admin_guard.authorise(
                    client_key(request.scope), request.headers.get("authorization"), token, time.monotonic()
                )
            except GatewayError as exc:
                return _problem(exc)
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
        if runtime.counters_pipeline is not None:
            lines += [
                "# TYPE gateway_counters_redis_commands_total counter",
                f"gateway_counters_redis_commands_total {runtime.counters_pipeline.commands}",
                "# TYPE gateway_counters_redis_roundtrips_total counter",
                f"gateway_counters_redis_roundtrips_total {runtime.counters_pipeline.flushes}",
            ]
        return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")

    return [
        Route("/health", health, methods=["GET", "HEAD"]),
        Route("/ready", ready, methods=["GET", "HEAD"]),
        Route("/metrics", metrics, methods=["GET"]),
        *extra,
    ]


def _redis_count(runtime: Runtime) -> int:
    return (runtime.redis is not None) + (runtime.counters_redis is not None)


def _problem(exc: GatewayError) -> Response:
    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in exc.headers}
    return Response(
        problem_body(exc.status, exc.title, exc.detail),
        status_code=exc.status,
        media_type="application/problem+json",
        headers={**headers, "cache-control": "no-store"},
    )
