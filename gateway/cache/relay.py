"""Relaying the upstream's answer through the cache: teeing a storable body into the store, or
passing a bypassed answer on with the cache's headers.

`Relay` decides at ``http.response.start``: pass the response on (adding the cache's headers and
storing it when storable and small enough), or hold it back for the middleware (a 304 to freshen,
an error to cover with a stale entry). The store write completes before the last body chunk goes
to the client, so whoever hears the answer finds it stored (read-your-writes); a teed body is
read at the upstream's pace and fed to the client by its own task, so a slow client never delays
the store (and the followers waiting for it).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.cache import policy
from gateway.cache.entry import StoredResponse
from gateway.cache.keys import loggable
from gateway.cache.replay import cache_headers
from gateway.cache.request import CacheRequest
from gateway.cache.store import CacheStore
from gateway.cache.tee import Feeder, TeeBudget
from gateway.errors import StoreUnavailable
from gateway.http.cache_control import cache_control_of
from gateway.http.dates import format_http_date
from gateway.http.fields import header, without
from gateway.http.headers import HOP_BY_HOP, connection_tokens
from gateway.http.request import RequestInfo
from gateway.types import Headers

log = logging.getLogger("gateway.cache")

#: Not stored with an entry: hop-by-hop fields, Age (recomputed, §4.2.3) and our own markers.
NOT_STORED_FIELDS = HOP_BY_HOP | {b"age", b"x-cache", b"content-length"}


async def forward_bypassing(
    app: ASGIApp, scope: Scope, receive: Receive, send: Send, info: RequestInfo, detail: str
) -> None:
    """Bypass: relay the upstream's answer untouched but for the cache's headers."""
    info.cache_status = "BYPASS"
    extra = cache_headers(b"BYPASS", policy.cache_status(fwd="bypass", detail=detail))

    async def send_bypass(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), *extra]}
        await send(message)

    await app(scope, receive, send_bypass)


Settled = Callable[[], Awaitable[None]]


async def nothing() -> None:
    """The default ``settled``: no lock to release."""
    return None


class Relay:
    """A ``send`` for the upstream exchange of one request (see the module docstring).

    While a storable answer is teed, its body is read at the upstream's pace and its client is
    fed by a `Feeder` at its own; ``settled`` (the collapsing lock's release) runs as soon as
    this exchange will store nothing more: when the answer is refused at its start, when it
    outgrows a limit, or right after it was stored. Call `close` when the exchange ends.
    """

    def __init__(
        self,
        send: Send,
        request: CacheRequest,
        store: CacheStore,
        *,
        request_time: float,
        clock: Callable[[], float],
        budget: TeeBudget,
        settled: Settled = nothing,
        intercept: Callable[[int, Headers], bool] = lambda status, headers: False,
        x_cache: bytes = b"MISS",
        fwd: str = "uri-miss",
    ) -> None:
        self.send = send
        self.request = request
        self.store = store
        self.request_time = request_time
        self.clock = clock
        self.budget = budget
        self.settled: Settled | None = settled
        self.intercept = intercept
        self.x_cache = x_cache
        self.fwd = fwd
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.held = False  # the response was held back for the middleware
        self.started = False
        self.stored = False
        self.response_time = 0.0
        self._chunks: list[bytes] | None = None
        self._size = 0
        self._reserved = 0
        self._feeder: Feeder | None = None

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            await self._start(message)
        elif message["type"] == "http.response.body":
            await self._body(message)
        elif self._feeder is not None:
            self._feeder.put(message)
        else:
            await self.send(message)

    async def _start(self, message: Message) -> None:
        self.status = message["status"]
        self.headers = [(name.lower(), value) for name, value in message.get("headers", [])]
        self.response_time = self.clock()
        if self.intercept(self.status, self.headers):
            self.held = True
            return
        self.started = True
        if header(self.headers, b"date") is None:  # RFC 9110 §6.6.1: a cache adds one
            self.headers.append((b"date", format_http_date(self.response_time)))
        detail = None
        if self._storable():
            if self._reserve_start():
                self._chunks = []
            else:
                detail = "tee-budget"
        if self._chunks is None:
            await self._settle()  # nothing will be stored: followers go upstream at once
        status = policy.cache_status(
            fwd=self.fwd, fwd_status=self.status, stored=self._chunks is not None, detail=detail
        )
        headers = [item for item in self.headers if item[0] != b"x-cache"]  # ours replaces it
        await self.send({**message, "headers": headers + cache_headers(self.x_cache, status)})

    def _storable(self) -> bool:
        request, settings = self.request, self.request.settings
        response_cc = cache_control_of(self.headers)
        reason = policy.refusal(
            request.method,
            self.status,
            request.request_cc,
            response_cc,
            request.headers,
            self.headers,
            default_ttl=settings.ttl,
            cache_errors=settings.cache_errors,
        )
        if reason is not None:
            return False
        length = header(self.headers, b"content-length")
        return not (length and length.isdigit() and int(length) > settings.max_object_bytes)

    def _reserve_start(self) -> bool:
        """A known length is reserved whole; an unknown one chunk by chunk, if any is left."""
        length = header(self.headers, b"content-length")
        if length and length.isdigit():
            return self._reserve(int(length))
        return not self.budget.exhausted

    def _reserve(self, total: int) -> bool:
        if total <= self._reserved:
            return True
        if not self.budget.try_reserve(total - self._reserved):
            return False
        self._reserved = total
        return True

    async def _body(self, message: Message) -> None:
        if self.held:
            return  # a held-back 304 or error body is not the client's
        if self._chunks is not None:
            chunk: bytes = message.get("body", b"")
            self._size += len(chunk)
            if self._size <= self.request.settings.max_object_bytes and self._reserve(self._size):
                self._chunks.append(chunk)
                await self._tee(message)
                return
            await self._abandon()  # too large, or the worker's tee budget is spent
        await self.send(message)

    async def _tee(self, message: Message) -> None:
        if message.get("more_body", False):
            if self._feeder is None:
                self._feeder = Feeder(self.send)
            self._feeder.put(message)
            return
        assert self._chunks is not None
        body = b"".join(self._chunks)
        self._chunks = None
        await self._store(body)
        del body
        await self._settle()
        # Read-your-writes: the last chunk reaches the client only once the entry is stored.
        if self._feeder is None:
            await self.send(message)
        else:
            self._feeder.put(message)
            feeder, self._feeder = self._feeder, None
            await feeder.close()
        self._release()

    async def _abandon(self) -> None:
        """Stop teeing: what was queued goes out first, then the client is relayed directly."""
        self._chunks = None
        if self._feeder is not None:
            feeder, self._feeder = self._feeder, None
            await feeder.close()
        self._release()
        await self._settle()

    async def _settle(self) -> None:
        if self.settled is not None:
            settled, self.settled = self.settled, None
            await settled()

    def _release(self) -> None:
        if self._reserved:
            self.budget.release(self._reserved)
            self._reserved = 0

    def close(self) -> None:
        """The exchange is over (or failed): stop feeding and give the budget back."""
        self._chunks = None
        if self._feeder is not None:
            self._feeder.cancel()
            self._feeder = None
        self._release()

    async def _store(self, body: bytes) -> None:
        entry = build_entry(
            self.request,
            self.status,
            self.headers,
            body,
            request_time=self.request_time,
            response_time=self.response_time,
        )
        self.stored = await put_entry(self.store, self.request, entry)


def build_entry(
    request: CacheRequest,
    status: int,
    headers: Headers,
    body: bytes,
    *,
    request_time: float,
    response_time: float,
) -> StoredResponse:
    """The entry for a storable response, with its freshness facts computed (§4.2)."""
    settings = request.settings
    response_cc = cache_control_of(headers)
    freshness = policy.assess(
        status,
        response_cc,
        headers,
        request_time,
        response_time,
        default_ttl=settings.ttl,
        force_ttl=settings.force_ttl,
        route_swr=settings.stale_while_revalidate,
        route_sie=settings.stale_if_error,
    )
    withheld = NOT_STORED_FIELDS | policy.withheld_fields(response_cc)
    withheld |= connection_tokens(headers)
    stored = without(headers, withheld)
    stored.append((b"content-length", str(len(body)).encode()))
    vary = policy.vary_names(headers)
    return StoredResponse(
        status,
        stored,
        body,
        request_time,
        response_time,
        response_time,
        freshness,
        policy.tags(headers),
        vary,
        policy.variant_material(vary, request.headers),
    )


async def put_entry(store: CacheStore, request: CacheRequest, entry: StoredResponse) -> bool:
    """Store ``entry`` for as long as it can be useful; False if it was not stored."""
    ttl = entry.freshness.retention(validation_possible(entry))
    if ttl <= 0:
        return False
    try:
        await store.put(
            request.key,
            policy.variant_id(entry.variant),
            entry.vary,
            entry.encode(),
            ttl,
            entry.tags,
        )
    except StoreUnavailable:
        log.debug("cache store unavailable; not stored: %s", loggable(request.key))
        return False
    return True


def validation_possible(entry: StoredResponse) -> bool:
    return policy.has_validators(entry.headers)
