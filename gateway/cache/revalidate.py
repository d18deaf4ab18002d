"""Revalidating a stored response with the origin (RFC 9111 §4.3) and covering for an erroring
origin with it (RFC 5861 §4, stale-if-error)."""

from __future__ import annotations

from collections.abc import Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.cache import policy, validation
from gateway.cache.entry import StoredResponse
from gateway.cache.relay import NOT_STORED_FIELDS, Relay, Settled, nothing, put_entry
from gateway.cache.replay import send_entry
from gateway.cache.request import CacheRequest
from gateway.cache.store import CacheStore
from gateway.cache.tee import TeeBudget
from gateway.errors import GatewayError
from gateway.http.cache_control import cache_control_of
from gateway.http.dates import format_http_date
from gateway.http.fields import header, without
from gateway.http.request import RequestInfo, request_info
from gateway.types import Headers

#: Fields of a 304 that answer the revalidating client but are never stored for others.
_CLIENT_ONLY = frozenset({b"set-cookie", b"set-cookie2"})


async def revalidate(
    app: ASGIApp,
    scope: Scope,
    receive: Receive,
    send: Send,
    request: CacheRequest,
    entry: StoredResponse,
    store: CacheStore,
    clock: Callable[[], float],
    *,
    budget: TeeBudget,
    settled: Settled = nothing,
) -> None:
    """Forward with the stored validators (§4.3.1); a 304 freshens the entry (§4.3.4) and the
    client is answered from it; a new response replaces it; an error is covered by the stale
    entry when stale-if-error allows. ``settled`` (the collapsing lock's release) runs as soon
    as nothing more will be stored, before the client is answered."""
    info = request_info(scope)
    request_time = clock()
    covers_errors = policy.serve_stale_on_error(entry.freshness, entry.age(request_time), request.request_cc)

    def intercept(status: int, headers: Headers) -> bool:
        return status == 304 or (covers_errors and policy.is_error_for_stale(status))

    fwd = "request" if "no-cache" in request.request_cc else "stale"
    relay = Relay(
        send,
        request,
        store,
        request_time=request_time,
        clock=clock,
        budget=budget,
        settled=settled,
        intercept=intercept,
        x_cache=b"EXPIRED",
        fwd=fwd,
    )
    conditional = validation.revalidation_headers(request.headers, entry.headers)
    upstream_scope = {**scope, "headers": conditional}
    try:
        await app(upstream_scope, receive, relay)
    except GatewayError as exc:  # the proxy's 502/504: the origin is unreachable
        if relay.started or not covers_errors or not policy.is_error_for_stale(exc.status):
            raise
        await settled()
        await _serve_stale(send, request, entry, clock(), exc.status, info)
        return
    finally:
        relay.close()
    if not relay.held:
        return
    if relay.status != 304:
        await settled()
        await _serve_stale(send, request, entry, clock(), relay.status, info)
        return
    if not validation.selects_stored(entry.headers, relay.headers):
        # The 304 is about another representation (§4.3.4): fetch this one whole.
        whole = {**scope, "headers": without(request.headers, validation.CONDITIONAL_HEADERS)}
        again = Relay(
            send,
            request,
            store,
            request_time=clock(),
            clock=clock,
            budget=budget,
            settled=settled,
        )
        try:
            await app(whole, receive, again)
        finally:
            again.close()
        return
    fresh = freshened(entry, relay.headers, request, request_time, relay.response_time)
    stored = await put_entry(store, request, fresh)
    await settled()
    status = policy.cache_status(fwd=fwd, fwd_status=304, stored=stored)
    own = [(name, value) for name, value in relay.headers if name in _CLIENT_ONLY]
    await send_entry(send, fresh, request, now=clock(), x_cache=b"EXPIRED", status=status, own=own)


def freshened(
    entry: StoredResponse,
    not_modified: Headers,
    request: CacheRequest,
    request_time: float,
    response_time: float,
) -> StoredResponse:
    """§4.3.4: the stored response updated with the 304's fields and its new age facts."""
    update = list(not_modified)
    if header(update, b"date") is None:  # RFC 9110 §6.6.1
        update.append((b"date", format_http_date(response_time)))
    headers = validation.freshen(entry.headers, update)
    age = header(update, b"age")
    assessed = [*headers, (b"age", age)] if age is not None else headers
    settings = request.settings
    freshness = policy.assess(
        entry.status,
        cache_control_of(headers),
        assessed,
        request_time,
        response_time,
        default_ttl=settings.ttl,
        force_ttl=settings.force_ttl,
        route_swr=settings.stale_while_revalidate,
        route_sie=settings.stale_if_error,
    )
    return entry.with_freshness(
        freshness,
        headers=without(headers, NOT_STORED_FIELDS - {b"content-length"}),
        request_time=request_time,
        response_time=response_time,
        stored_at=response_time,
    )


async def _serve_stale(
    send: Send,
    request: CacheRequest,
    entry: StoredResponse,
    now: float,
    upstream_status: int,
    info: RequestInfo,
) -> None:
    """RFC 5861 §4: answer with the stale entry instead of the origin's error."""
    info.cache_status = "STALE"
    age = entry.age(now)
    status = policy.cache_status(
        hit=True,
        fwd="stale",
        fwd_status=upstream_status,
        ttl=entry.freshness.lifetime - age,
        detail="stale-if-error",
    )
    await send_entry(send, entry, request, now=now, x_cache=b"STALE", status=status)
