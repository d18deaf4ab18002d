"""`POST <admin>/purge`: delete (or mark stale) cached responses by url, path prefix or tag.

Body: exactly one of ``{"url": "/path?query"}``, ``{"prefix": "/path/"}``, ``{"tag": "name"}``,
optionally with ``"soft": true``. Authorised by ``Authorization: Bearer <GATEWAY_ADMIN_TOKEN>``;
without a configured token purging is disabled. Answers ``{"purged": n, "soft": bool}``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.admin_auth import AdminGuard, client_key
from gateway.cache.keys import prefix_form, strip_query, target_form
from gateway.cache.store import CacheStore
from gateway.config import Settings
from gateway.errors import (
    BadRequest,
    Forbidden,
    GatewayError,
    PayloadTooLarge,
    ServiceUnavailable,
    StoreUnavailable,
    problem_body,
)
from gateway.http.paths import PathRejected, normalise_path
from gateway.routing import RouteTable

log = logging.getLogger("gateway.cache")

MAX_BODY_BYTES = 16 * 1024
_SELECTORS = ("url", "prefix", "tag")
_FIELDS = frozenset({*_SELECTORS, "soft"})
_NO_STORE = {"cache-control": "no-store"}


class PurgeRuntime(Protocol):
    """The part of the app's runtime the endpoint reads (filled in by the lifespan)."""

    @property
    def settings(self) -> Settings: ...

    @property
    def cache_store(self) -> CacheStore | None: ...

    @property
    def admin_guard(self) -> AdminGuard: ...


def purge_endpoint(runtime: PurgeRuntime) -> Callable[[Request], Awaitable[Response]]:
    """Build the purge endpoint; `runtime` is read on every request, after the lifespan ran."""

    async def purge(request: Request) -> Response:
        try:
            _authorise(request, runtime.settings, runtime.admin_guard)
            kind, value, soft = _parse(await _read_body(request))
            store = runtime.cache_store
            if store is None:
                raise ServiceUnavailable("the cache is not enabled on this gateway")
            try:
                purged = 0
                if kind == "url":
                    for url in _url_keys(value, runtime.settings):
                        purged += await store.purge(url=url, soft=soft)
                elif kind == "prefix":
                    prefix = _normal(value.encode("utf-8"), runtime.settings)
                    purged = await store.purge(prefix=prefix_form(prefix), soft=soft)
                else:
                    purged = await store.purge(tag=_tag_form(value), soft=soft)
            except StoreUnavailable as exc:
                raise ServiceUnavailable(
                    "the cache store is unavailable; the purge may be incomplete, retry it"
                ) from exc
        except GatewayError as exc:
            return _problem(request, exc)
        log.info("cache purge %s=%r soft=%s: %d keys", kind, value, soft, purged)
        return JSONResponse({"purged": purged, "soft": soft}, headers=_NO_STORE)

    return purge


def _authorise(request: Request, settings: Settings, guard: AdminGuard) -> None:
    if settings.admin_token is None:
        raise Forbidden("purging is disabled: no admin token (GATEWAY_ADMIN_TOKEN) is configured")
    guard.authorise(
        client_key(request.scope),
        request.headers.get("authorization"),
        settings.admin_token,
        time.monotonic(),
    )


async def _read_body(request: Request) -> bytes:
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise PayloadTooLarge(f"the purge request body is limited to {MAX_BODY_BYTES} bytes")
    return bytes(body)


def _parse(body: bytes) -> tuple[str, str, bool]:
    """Validate the JSON body: (selector, value, soft)."""
    try:
        doc: Any = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("the body must be a JSON object") from None
    if not isinstance(doc, dict):
        raise BadRequest("the body must be a JSON object")
    unknown = sorted(set(doc) - _FIELDS)
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(unknown)}")
    chosen = [name for name in _SELECTORS if name in doc]
    if len(chosen) != 1:
        raise BadRequest('give exactly one of "url", "prefix" or "tag"')
    kind = chosen[0]
    value = doc[kind]
    if not isinstance(value, str) or not value:
        raise BadRequest(f'"{kind}" must be a non-empty string')
    if kind != "tag" and not value.startswith("/"):
        raise BadRequest(f'"{kind}" must be a path starting with "/" (e.g. "/items?page=2")')
    soft = doc.get("soft", False)
    if not isinstance(soft, bool):
        raise BadRequest('"soft" must be true or false')
    return kind, value, soft


def _tag_form(text: str) -> str:
    """Tags hold response bytes decoded as latin-1; JSON gives text: re-encode it."""
    return text.encode("utf-8").decode("latin-1")


def _normal(path: bytes, settings: Settings) -> bytes:
    """The path as requests are keyed: normalised like every request path (context layer), so
    `//api/x` or `/caf\u00e9` purges what `/api/x` and `/caf%C3%A9` stored."""
    try:
        return normalise_path(
            path,
            merge_slashes=settings.merge_slashes,
            keep_escaped_slashes=settings.path_escaped_slashes == "keep",
        )
    except PathRejected as exc:
        raise BadRequest(f"not a path the gateway would serve: {exc}") from None


def _url_keys(url: str, settings: Settings) -> list[str]:
    """The url as the cache keys it (`keys.target_form`): without the route's ignored query
    parameters, plus the url with its query exactly as given."""
    path, _, query = url.encode("utf-8").partition(b"?")
    path = _normal(path, settings)
    route = RouteTable(settings.routes).match(path)
    ignored = route.cache.ignore_query_params if route is not None else frozenset[str]()
    forms = (target_form(path, strip_query(query, ignored)), target_form(path, query))
    return list(dict.fromkeys(forms))


def _problem(request: Request, exc: GatewayError) -> Response:
    info = request.scope.get("gateway")
    request_id = str(getattr(info, "request_id", "") or "")
    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in exc.headers}
    return Response(
        problem_body(exc.status, exc.title, exc.detail, request_id),
        status_code=exc.status,
        media_type="application/problem+json",
        headers={**headers, **_NO_STORE},
    )
