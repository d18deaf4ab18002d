"""RateLimitMiddleware: decide before anything is forwarded or answered from cache.

Per request: skip admin paths and routes without limits; exempt clients pass untouched. The
decision is started first, then `prefetch` (the cache's lookup, wired in app.py), so both leave
in one pipeline flush; only then is the decision awaited. Admitted answers get the RateLimit
fields through the request view's `extra_response_headers` (added by the context layer to every
response start, streamed ones included); refused ones get a 429 problem+json here. When the
store cannot decide, the route's fail mode applies: `open` admits, `closed` answers 503, `local`
counts in this process until the store answers again.

A route with several limit sets (its own and the IP ceiling, or a routes-file list) sends them
as one script call: one round trip, one atomic decision over every set's counters.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.errors import StoreUnavailable, send_problem
from gateway.http.request import RequestInfo, request_info
from gateway.ratelimit.limiter import Limiter, MemoryLimiter
from gateway.ratelimit.policy import (
    Check,
    Decision,
    RatePolicy,
    RouteLimits,
    compile_policies,
    rejection_headers,
    response_headers,
    several_rejection_headers,
    several_response_headers,
    several_violated,
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
    def __init__(self, app: ASGIApp, runtime: Runtime, prefetch: Prefetch | None = None) -> None:
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
        rules = self.policies.get(route.name) if route is not None else None
        if route is None or rules is None:  # an admin path, or a route without limits
            await self.app(scope, receive, send)
            return
        policy = rules.single
        if policy is None:
            await self._several(rules, info, route.name, scope, receive, send)
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
                    send,
                    503,
                    "Service Unavailable",
                    "rate limiting is temporarily unavailable",
                    headers=[(b"retry-after", CLOSED_RETRY_AFTER)],
                    request_id=info.request_id,
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
                log.info(
                    "rate limit (shadow) would refuse request %s: %s, retry after %d ms",
                    info.request_id,
                    names,
                    decision.retry_after_ms,
                )
        elif not decision.allowed:
            metrics["limited"] += 1
            await self._reject(policy, decision, info, scope, send)
            return
        else:
            metrics["admitted"] += 1
            info.extra_response_headers.extend(response_headers(policy, decision))
        await self.app(scope, receive, send)

    async def _several(
        self,
        rules: RouteLimits,
        info: RequestInfo,
        route_name: str,
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        """Several limit sets: the sets that apply to this request (exemptions are per set),
        decided in one atomic step."""
        method = scope["method"]
        active: list[RatePolicy] = []
        checks: list[Check] = []
        for s in rules.sets:
            identity = s.identity(info.client_ip, scope["headers"], route_name)
            if identity is not None:
                active.append(s)
                checks.append(Check(identity, s.limits, s.strategy, s.cost(method), not s.shadow))
        if not checks:
            await self.app(scope, receive, send)
            return
        limiter: Limiter = self.runtime.limiter or self.memory
        pending = limiter.hit_all(checks, rules.tag)
        if self.prefetch is not None:
            self.prefetch(scope)  # the cache lookup joins the decision's round trip
        metrics = self.runtime.metrics.ratelimit
        enforcing = any(not s.shadow for s in active)
        try:
            decision = await pending
        except StoreUnavailable:
            metrics["failed"] += 1
            if rules.fail_mode == "closed" and enforcing:
                await send_problem(
                    send,
                    503,
                    "Service Unavailable",
                    "rate limiting is temporarily unavailable",
                    headers=[(b"retry-after", CLOSED_RETRY_AFTER)],
                    request_id=info.request_id,
                    head=method == "HEAD",
                )
                return
            if rules.fail_mode != "local":
                await self.app(scope, receive, send)
                return
            decision = self.memory.decide_all(checks, rules.tag)
        shadowed = several_violated(active, decision, shadow=True)
        if shadowed:
            metrics["shadow"] += 1
            listed = ", ".join(shadowed)
            info.extra_response_headers.append((SHADOW_HEADER, listed.encode()))
            log.info("rate limit (shadow) would refuse request %s: %s", info.request_id, listed)
        if not decision.allowed:
            metrics["limited"] += 1
            refused = several_violated(active, decision, shadow=False)
            names = [s.name for s in active if not s.shadow and set(s.items) & set(refused)]
            names = names or [s.name for s in active if not s.shadow]
            await send_problem(
                send,
                429,
                "Too Many Requests",
                "rate limit exceeded for " + ", ".join(f'policy "{n}"' for n in names),
                headers=several_rejection_headers(active, decision),
                request_id=info.request_id,
                extra={"type": QUOTA_EXCEEDED, "policy": names[0], "violated-policies": refused},
                head=method == "HEAD",
            )
            return
        metrics["admitted"] += 1
        info.extra_response_headers.extend(several_response_headers(active, decision))
        await self.app(scope, receive, send)

    async def _reject(
        self,
        policy: RatePolicy,
        decision: Decision,
        info: RequestInfo,
        scope: Scope,
        send: Send,
    ) -> None:
        await send_problem(
            send,
            429,
            "Too Many Requests",
            f'rate limit exceeded for policy "{policy.name}"',
            headers=rejection_headers(policy, decision),
            request_id=info.request_id,
            extra={
                "type": QUOTA_EXCEEDED,
                "policy": policy.name,
                "violated-policies": violated(policy, decision),
            },
            head=scope["method"] == "HEAD",
        )
