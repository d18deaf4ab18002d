"""RateLimitMiddleware: decide before anything is forwarded or answered from cache.

Per request: skip admin paths and routes without limits; exempt clients pass untouched. The
decision is started first, then `prefetch` (the cache's lookup, wired in app.py), so both leave
in one pipeline flush; only then is the decision awaited. Admitted answers get the RateLimit
fields through the request view's `extra_response_headers` (added by the context layer to every
response start, streamed ones included); refused ones get a 429 problem+json here. When the
store cannot decide, the route's fail mode applies: `open` admits, `closed` answers 503, `local`
counts in this process until the store answers again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.errors import StoreUnavailable, send_problem
from gateway.http.request import RequestInfo, request_info
from gateway.ratelimit.limiter import Limiter, MemoryLimiter
from gateway.ratelimit.policy import (
    Decision,
    RatePolicy,
    compile_policies,
    rejection_headers,
    response_headers,
    violated,
)
from gateway.runtime import Runtime

log = logging.getLogger("gateway.ratelimit")
QUOTA_EXCEEDED = "https://iana.org/assignments/http-problem-types#quota-exceeded"
SHADOW_HEADER = b"x-ratelimit-shadow"
CLOSED_RETRY_AFTER = b"1"


#: Starts a request's cache lookup so it joins the rate-limit decision's round trip.
Prefetch = Callable[[Scope], None]


class RateLimitMiddleware:
    def __init__(
        self, app: ASGIApp, runtime: Runtime, prefetch: Prefetch | None = None
    ) -> None:
        self.app = app
        self.runtime = runtime
        self.prefetch = prefetch
        self.policies = compile_policies(runtime.settings)
        self.memory = MemoryLimiter()  # no store configured, or the `local` fail mode

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        info = request_info(scope)
        route = info.route
        policy = self.policies.get(route.name) if route is not None else None
        if route is None or policy is None:  # an admin path, or a route without limits
            await self.app(scope, receive, send)
            return
        identity = policy.identity(info.client_ip, scope["headers"], route.name)
        if identity is None:  # exempt
            await self.app(scope, receive, send)
            return
        cost = policy.cost(scope["method"])
        limiter: Limiter = self.runtime.limiter or self.memory
        pending = limiter.hit(identity, policy.limits, policy.strategy, cost)
        if self.prefetch is not None:
            self.prefetch(scope)  # the cache lookup joins the decision's round trip
        metrics = self.runtime.metrics.ratelimit
        try:
            decision = await pending
        except StoreUnavailable:  # the limiter logged it once; the route's fail mode applies
            metrics["failed"] += 1
            if policy.fail_mode == "closed" and not policy.shadow:
                await send_problem(
                    send, 503, "Service Unavailable", "rate limiting is temporarily unavailable",
                    headers=[(b"retry-after", CLOSED_RETRY_AFTER)], request_id=info.request_id,
                    head=scope["method"] == "HEAD",
                )
                return
            if policy.fail_mode != "local":
                await self.app(scope, receive, send)
                return
            decision = self.memory.decide(identity, policy.limits, policy.strategy, cost)

        if policy.shadow:
            if not decision.allowed:
                metrics["shadow"] += 1
                names = ", ".join(violated(policy, decision))
                info.extra_response_headers.append((SHADOW_HEADER, names.encode()))
                log.info("rate limit (shadow) would refuse request %s: %s, retry after %d ms",
                         info.request_id, names, decision.retry_after_ms)
        elif not decision.allowed:
            metrics["limited"] += 1
            await self._reject(policy, decision, info, scope, send)
            return
        else:
            metrics["admitted"] += 1
            info.extra_response_headers.extend(response_headers(policy, decision))
        await self.app(scope, receive, send)

    async def _reject(
        self, policy: RatePolicy, decision: Decision, info: RequestInfo, scope: Scope,
        send: Send,
    ) -> None:
        await send_problem(
            send, 429, "Too Many Requests", f'rate limit exceeded for policy "{policy.name}"',
            headers=rejection_headers(policy, decision), request_id=info.request_id,
            extra={"type": QUOTA_EXCEEDED, "policy": policy.name,
                   "violated-policies": violated(policy, decision)},
            head=scope["method"] == "HEAD",
        )
