"""CacheMiddleware: the RFC 9111 shared cache in front of the proxy.

GET and HEAD on a cache-enabled route are looked up (one store round trip, which the rate-limit
layer may already have started through `prefetch`) and answered from storage when the policy
allows; otherwise they go upstream (collapsed across processes by the store's lock) and storable
answers are teed into the store. Unsafe methods invalidate (§4.4). Store trouble never fails a
request: the cache steps aside and the upstream answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.cache import policy, validation
from gateway.cache.collapse import Refresher, lead_or_follow
from gateway.cache.entry import StoredResponse, decode
from gateway.cache.invalidate import forward_invalidating
from gateway.cache.relay import Relay, forward_bypassing
from gateway.cache.replay import cache_headers, send_entry
from gateway.cache.request import CacheRequest
from gateway.cache.revalidate import revalidate
from gateway.cache.store import CacheStore, Lookup
from gateway.cache.tee import TeeBudget
from gateway.errors import GatewayError, StoreUnavailable, send_problem
from gateway.http.cache_control import parse_cache_control
from gateway.http.fields import header
from gateway.http.fields import header_values as _header_values
from gateway.http.request import request_info

if TYPE_CHECKING:
    from gateway.runtime import Runtime

log = logging.getLogger("gateway.cache")

LOOKUP_KEY = "gateway.cache_lookup"
_PLAN_KEY = "gateway.cache_plan"
_VARY_MEMORY = 10_000  # primary keys whose Vary this process remembers, to guess the variant


class CacheMiddleware:
    """Pure ASGI middleware; per-request state lives in locals and `CacheRequest`."""

    def __init__(self, app: ASGIApp, runtime: Runtime, clock: Callable[[], float] = time.time) -> None:
        self.app = app
        self.runtime = runtime
        self.clock = clock
        self._vary: OrderedDict[str, str] = OrderedDict()
        self.tee = TeeBudget(runtime.settings.cache_tee_bytes)
        self.refresher = Refresher(app, clock, self.tee)

    # -- prefetch -------------------------------------------------------------------------
    def prefetch(self, scope: Scope) -> None:
        """Start this request's lookup now, so it shares a round trip with the rate limiter's
        script; the awaitable is left in ``scope["gateway.cache_lookup"]``."""
        plan = self._plan(scope)
        if plan is None:
            return
        request, variant = plan
        started = self._start_lookup(request.key, variant)
        if started is not None:
            scope[LOOKUP_KEY] = started
            scope[_PLAN_KEY] = plan

    def _start_lookup(self, key: str, variant: str) -> Awaitable[Lookup] | None:
        store: CacheStore | None = self.runtime.cache_store
        if store is None:
            return None
        try:
            pending = store.lookup(key, variant)
        except StoreUnavailable:
            return None
        if asyncio.iscoroutine(pending):
            pending = asyncio.ensure_future(pending)
        if isinstance(pending, asyncio.Future):
            pending.add_done_callback(_consume_exception)  # unawaited when rate limited
        return pending

    def _plan(self, scope: Scope) -> tuple[CacheRequest, str] | None:
        """The request's key and guessed variant, or None when the cache does not look up."""
        if scope["type"] != "http" or scope["method"] not in policy.LOOKUP_METHODS:
            return None
        info = request_info(scope)
        route = info.route
        if route is None or not route.cache.enabled or self.runtime.cache_store is None:
            return None
        settings = route.cache
        key = policy.primary_key(
            info.scheme,
            info.cache_authority,
            route.name,
            info.path,
            scope.get("query_string", b""),
            settings.ignore_query_params,
        )
        # Vary selects on the fields as forwarded (the gateway's own X-Forwarded-For, not the
        # client's), the same list the upstream's answer was chosen by.
        headers = info.headers
        honor = settings.honor_client_no_cache
        request_cc = policy.client_directives(
            parse_cache_control(_header_values(headers, b"cache-control")),
            header(headers, b"pragma") if honor else None,
            honor_refresh=honor,
        )
        request = CacheRequest(key, scope["method"], headers, settings, request_cc)
        vary = self._vary.get(key, "")
        return request, policy.variant_id(policy.variant_material(vary, headers))

    # -- dispatch -------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        plan = scope.pop(_PLAN_KEY, None) or self._plan(scope)
        pending: Awaitable[Lookup] | None = scope.pop(LOOKUP_KEY, None)
        if plan is None:
            if scope["method"] not in policy.SAFE_METHODS:
                await forward_invalidating(self.app, self.runtime, scope, receive, send)
            else:
                await self.app(scope, receive, send)
            return
        request, variant = plan
        info = request_info(scope)
        settings = request.settings
        if settings.ignore_query_params:  # forward exactly what the key names
            scope["query_string"] = policy.strip_query(
                scope.get("query_string", b""), settings.ignore_query_params
            )
        reason = _bypass_reason(request)
        if reason is not None:
            await forward_bypassing(self.app, scope, receive, send, info, reason)
            return
        store = self.runtime.cache_store
        assert store is not None  # _plan() returns None without a store
        try:
            lookup = await (pending or store.lookup(request.key, variant))
            entry, lookup = await self._select(store, request, lookup, variant)
        except StoreUnavailable:
            await forward_bypassing(self.app, scope, receive, send, info, "store-unavailable")
            return
        await self._answer(scope, receive, send, request, entry, lookup)

    async def _select(
        self, store: CacheStore, request: CacheRequest, lookup: Lookup, asked: str
    ) -> tuple[StoredResponse | None, Lookup]:
        """§4.1: the stored response whose Vary-selected headers match the request."""
        if lookup.vary is None:
            return None, lookup
        self._remember_vary(request.key, lookup.vary)
        material = policy.variant_material(lookup.vary, request.headers)
        variant = policy.variant_id(material)
        if variant != asked:  # our guess of the key's Vary was stale: one more round trip
            lookup = await store.lookup(request.key, variant)
        entry = decode(lookup.blob)
        if entry is None or entry.variant != material:
            return None, lookup
        if (
            header(request.headers, b"authorization") is not None
            and not entry.freshness.flags & policy.FLAG_AUTHORIZED_OK
        ):
            return None, lookup  # §3.5
        return entry, lookup

    async def _usable(self, store: CacheStore, request: CacheRequest) -> StoredResponse | None:
        """A stored entry that may answer ``request`` now without going upstream."""
        material = policy.variant_material(self._vary.get(request.key, ""), request.headers)
        variant = policy.variant_id(material)
        lookup = await store.lookup(request.key, variant)
        entry, lookup = await self._select(store, request, lookup, variant)
        if entry is None:
            return None
        entry = _soft_purged(entry, lookup.purged_at)
        decision = policy.reuse(entry.freshness, entry.age(self.clock()), request.request_cc)
        return entry if decision in (policy.Reuse.FRESH, policy.Reuse.STALE) else None

    def _remember_vary(self, key: str, vary: str) -> None:
        if vary:
            self._vary[key] = vary
            self._vary.move_to_end(key)
            if len(self._vary) > _VARY_MEMORY:
                self._vary.popitem(last=False)
        else:
            self._vary.pop(key, None)

    async def _answer(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        request: CacheRequest,
        entry: StoredResponse | None,
        lookup: Lookup,
    ) -> None:
        info = request_info(scope)
        store = self.runtime.cache_store
        assert store is not None  # only reached through __call__, after _plan()
        now = self.clock()
        if entry is not None:
            entry = _soft_purged(entry, lookup.purged_at)
            freshness = entry.freshness
            age = entry.age(now)
            decision = policy.reuse(freshness, age, request.request_cc)
            if decision is policy.Reuse.FRESH:
                info.cache_status = "HIT"
                status = policy.cache_status(hit=True, ttl=freshness.lifetime - age)
                await send_entry(send, entry, request, now=now, x_cache=b"HIT", status=status)
                return
            if decision is not policy.Reuse.REVALIDATE:
                info.cache_status = "STALE"
                background = decision is policy.Reuse.STALE_WHILE_REVALIDATE
                detail = "stale-while-revalidate" if background else "max-stale"
                status = policy.cache_status(hit=True, ttl=freshness.lifetime - age, detail=detail)
                if background:
                    self.refresher.schedule(scope, request, entry, store)
                await send_entry(send, entry, request, now=now, x_cache=b"STALE", status=status)
                return
        if "only-if-cached" in request.request_cc:  # §5.2.1.7
            info.cache_status = "MISS"
            await send_problem(
                send,
                504,
                "Gateway Timeout",
                "Not in cache (only-if-cached).",
                headers=cache_headers(b"MISS", policy.cache_status(detail="only-if-cached")),
                request_id=info.request_id,
                head=request.method == "HEAD",
            )
            return
        fwd = "uri-miss" if lookup.vary is None else "vary-miss" if lookup.vary else "miss"
        await self._forward(scope, receive, send, request, entry, store, fwd)

    async def _forward(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        request: CacheRequest,
        entry: StoredResponse | None,
        store: CacheStore,
        fwd: str,
    ) -> None:
        """Go upstream as the collapsing leader, or wait for one (across processes). The lock is
        released as soon as the exchange will store nothing more, not when the client has been
        answered: a slow client never keeps the followers waiting."""
        info = request_info(scope)
        token: str | None = None

        async def release() -> None:
            nonlocal token
            if token is not None:
                held, token = token, None
                with contextlib.suppress(StoreUnavailable):
                    await store.unlock(request.key, held)

        collapsible = (
            request.settings.lock_timeout > 0
            and "no-cache" not in request.request_cc
            and header(request.headers, b"authorization") is None
        )
        if collapsible:
            token, found = await lead_or_follow(store, request, lambda: self._usable(store, request))
            if found is not None:
                info.cache_status = "HIT"
                now = self.clock()
                age = found.age(now)
                status = policy.cache_status(hit=True, ttl=found.freshness.lifetime - age, detail="collapsed")
                await send_entry(send, found, request, now=now, x_cache=b"HIT", status=status)
                return
        try:
            if entry is not None:
                info.cache_status = "EXPIRED"
                await revalidate(
                    self.app,
                    scope,
                    receive,
                    send,
                    request,
                    entry,
                    store,
                    self.clock,
                    budget=self.tee,
                    settled=release,
                )
            else:
                info.cache_status = "MISS"
                relay = Relay(
                    send,
                    request,
                    store,
                    request_time=self.clock(),
                    clock=self.clock,
                    budget=self.tee,
                    settled=release,
                    fwd=fwd,
                )
                try:
                    await self.app(scope, receive, relay)
                finally:
                    relay.close()
        except GatewayError as exc:  # rendered by the context layer: mark it as ours too
            status = policy.cache_status(fwd=fwd, fwd_status=exc.status)
            info.extra_response_headers.extend(cache_headers(info.cache_status.encode(), status))
            raise
        finally:
            await release()


def _bypass_reason(request: CacheRequest) -> str | None:
    """Requests the cache neither answers nor stores for."""
    headers = request.headers
    if not request.settings.allow_cookies and header(headers, b"cookie") is not None:
        return "cookie"
    for name, _ in headers:
        if name in validation.CACHE_BYPASS_HEADERS:
            return name.decode()
    return None


def _soft_purged(entry: StoredResponse, purged_at: float | None) -> StoredResponse:
    """A soft purge marks entries stored before it stale from the purge on."""
    if purged_at is None or entry.stored_at > purged_at:
        return entry
    lifetime = min(entry.freshness.lifetime, entry.age(purged_at))
    return entry.with_freshness(replace(entry.freshness, lifetime=lifetime))


def _consume_exception(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()
