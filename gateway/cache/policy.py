"""RFC 9111 shared-cache decisions (with RFC 5861 stale extensions and RFC 9211 Cache-Status).

Pure functions over plain values: no I/O, no clock (callers pass ``now``), no framework. Each
function cites the section it implements; the decisions that read like the spec are tables.
Conditional requests and validation live in `cache/validation.py`, keys and variants (§4.1) in
`cache/keys.py` (re-exported here).
"""

from __future__ import annotations

import enum
import urllib.parse
from collections.abc import Collection
from dataclasses import dataclass

from gateway.cache.keys import primary_key as primary_key
from gateway.cache.keys import strip_query as strip_query
from gateway.cache.keys import tags as tags
from gateway.cache.keys import variant_id as variant_id
from gateway.cache.keys import variant_material as variant_material
from gateway.cache.keys import vary_names as vary_names
from gateway.http.cache_control import DELTA_SECONDS_MAX, CacheControl, parse_delta_seconds
from gateway.http.dates import parse_http_date
from gateway.http.fields import combined, header, list_members
from gateway.types import Headers

#: RFC 9110 §9.2.1: safe methods never invalidate; every other method (even unknown) does (§4.4).
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
#: The methods whose responses this cache answers from storage (HEAD is served from GET).
LOOKUP_METHODS = frozenset({"GET", "HEAD"})
#: RFC 9110 §15.1: status codes cacheable by default, so heuristic freshness may apply (§4.2.2).
HEURISTIC_STATUSES = frozenset({200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501})
#: RFC 9110 §15.1: the error statuses cacheable by default. Every other 4xx and every 5xx is
#: an error this cache refuses to store, even with explicit freshness (as Varnish does for 5xx),
#: unless the route lists it in `cache_errors`: one failed or attacker-provoked answer must not
#: be served to everyone. (501 is cacheable by default in §15.1 but is a 5xx: refused too.)
STORABLE_ERROR_STATUSES = frozenset({404, 405, 410, 414})
#: Request directives that only make a stored answer unusable (§5.2.1.1, §5.2.1.3, §5.2.1.4).
#: Unless the route honours them, they are ignored, so no client can make the cache fetch and
#: store a new answer over a fresh one whenever it likes.
CLIENT_REFRESH_DIRECTIVES = frozenset({"no-cache", "max-age", "min-fresh"})
#: Never stored as a full object: partial content (§3.3-§3.4), 304 (only freshens, §4.3.4),
#: and 429, whose answer is about one client's quota, not the resource.
NEVER_STORED_STATUSES = frozenset({206, 304, 429})
#: Statuses whose semantics this cache implements, for must-understand (§5.2.2.3).
UNDERSTOOD_STATUSES = frozenset(
    {200, 203, 204, 300, 301, 302, 303, 307, 308, 400, 403, 404, 405, 410, 414, 501}
)
#: RFC 5861 windows may not stretch a response the origin says must never be served stale.
NO_STALE_DIRECTIVES = frozenset({"must-revalidate", "proxy-revalidate"})
#: Directives whose qualified form (``no-cache="a, b"``) only withholds the named fields: a
#: shared cache stores the response without them (§5.2.2.4, §5.2.2.7).
FIELD_QUALIFIED_DIRECTIVES = ("no-cache", "private")
#: §3.5: directives that let a shared cache reuse a response to a request with Authorization.
AUTHORIZED_REUSE_DIRECTIVES = frozenset({"public", "s-maxage", "must-revalidate"})
#: The proxy answers an unreachable or slow upstream with one of these as problem+json.
GATEWAY_ERROR_STATUSES = frozenset({502, 504})
PROBLEM = b"application/problem+json"

#: Flags of a stored response, recorded at store time.
FLAG_NO_CACHE = 1  # §5.2.2.4: always revalidate before reuse
FLAG_NO_STALE = 2  # §4.2.4, §5.2.2.2, §5.2.2.8, §5.2.2.10: never serve stale
FLAG_AUTHORIZED_OK = 4  # §3.5: may answer requests carrying Authorization


@dataclass(frozen=True, slots=True)
class Freshness:
    """What §4.2 and RFC 5861 say about one stored response, computed once at store time."""

    lifetime: float  # §4.2.1 freshness_lifetime
    initial_age: float  # §4.2.3 corrected_initial_age
    stale_while_revalidate: float
    stale_if_error: float
    flags: int

    def retention(self, has_validators: bool) -> float:
        """How long the store should keep the entry: fresh time plus the stale windows, plus a
        grace period to revalidate (§4.3) when it has validators. 0 means do not store."""
        stale = max(self.stale_while_revalidate, self.stale_if_error)
        if has_validators:
            stale = max(stale, min(max(self.lifetime, 60.0), 86400.0))
        return max(0.0, self.lifetime - self.initial_age) + stale


def refusal(
    method: str,
    status: int,
    request_cc: CacheControl,
    response_cc: CacheControl,
    request_headers: Headers,
    response_headers: Headers,
    *,
    default_ttl: float = 0.0,
    cache_errors: Collection[int] = frozenset(),
) -> str | None:
    """Why a response may not be stored (RFC 9111 §3, §3.5, §5.2), or None if it may.

    The reason is short enough for a Cache-Status ``detail``. Set-Cookie responses are never
    stored (one user's cookie must not reach another); ``Vary: *`` can never be matched (§4.1).
    Error statuses are refused unless cacheable by default or listed in ``cache_errors``, and
    are only stored with explicit freshness or validators: ``default_ttl`` never applies.
    """
    if method != "GET":
        return "method"
    if status < 200 or status > 599 or status in NEVER_STORED_STATUSES:
        return "status"
    if is_refused_error(status, cache_errors):
        return "error-status"
    if "no-store" in request_cc:
        return "request-no-store"  # §5.2.1.5
    if "must-understand" in response_cc:
        if status not in UNDERSTOOD_STATUSES:
            return "must-understand"  # §5.2.2.3; when understood it overrides no-store
    elif "no-store" in response_cc:
        return "no-store"  # §5.2.2.5
    if _unqualified(response_cc, "private"):
        return "private"  # §5.2.2.7; the qualified form only withholds fields
    if header(request_headers, b"authorization") is not None and not (
        AUTHORIZED_REUSE_DIRECTIVES.intersection(response_cc.directives)
    ):
        return "authorization"  # §3.5
    if header(response_headers, b"set-cookie") is not None:
        return "set-cookie"
    if status in GATEWAY_ERROR_STATUSES and header(response_headers, b"content-type") == PROBLEM:
        return "gateway-error"  # the proxy's own 502/504: the origin never answered
    if "*" in list_members(combined(response_headers, b"vary")):
        return "vary-star"
    if not _explicitly_cacheable(status, response_cc, response_headers) and not (
        status in HEURISTIC_STATUSES
        and ((default_ttl > 0 and status < 400) or has_validators(response_headers))
    ):
        return "not-cacheable"  # §3: no explicit freshness, no usable heuristic or validator
    return None


def is_refused_error(status: int, cache_errors: Collection[int] = frozenset()) -> bool:
    """An error status this cache never stores (see `STORABLE_ERROR_STATUSES`) unless the
    route opted in for it."""
    return status >= 400 and status not in STORABLE_ERROR_STATUSES and status not in cache_errors


def client_directives(request_cc: CacheControl, pragma: bytes | None, *, honor_refresh: bool) -> CacheControl:
    """The request directives the cache acts on (§5.2.1).

    By default (as Varnish) a client cannot make a stored answer unusable: ``no-cache``,
    ``max-age`` and ``min-fresh`` are ignored, and so is ``Pragma``. A route that honours them
    gets RFC 9111 behaviour, with ``Pragma: no-cache`` read as ``no-cache`` when the request has
    no Cache-Control (RFC 7234 §5.4). Directives that cannot replace an entry (``no-store``,
    ``max-stale``, ``only-if-cached``, ``stale-if-error``) are always kept.
    """
    if honor_refresh:
        if not request_cc.directives and pragma is not None and "no-cache" in list_members(pragma):
            return PRAGMA_NO_CACHE
        return request_cc
    if CLIENT_REFRESH_DIRECTIVES.isdisjoint(request_cc.directives):
        return request_cc
    kept = {k: v for k, v in request_cc.directives.items() if k not in CLIENT_REFRESH_DIRECTIVES}
    return CacheControl(kept, request_cc.invalid - CLIENT_REFRESH_DIRECTIVES)


PRAGMA_NO_CACHE = CacheControl({"no-cache": None})


def _unqualified(response_cc: CacheControl, name: str) -> bool:
    return name in response_cc and not (response_cc.directives[name] or "").strip()


def withheld_fields(response_cc: CacheControl) -> frozenset[bytes]:
    """§5.2.2.4 / §5.2.2.7: fields named by qualified no-cache or private, which a shared cache
    must not store (storing the rest is allowed)."""
    names: set[bytes] = set()
    for directive in FIELD_QUALIFIED_DIRECTIVES:
        value = response_cc.directives.get(directive)
        if value:
            names.update(name.strip().lower().encode("latin-1") for name in value.split(",") if name.strip())
    return frozenset(names)


def _explicitly_cacheable(status: int, response_cc: CacheControl, response_headers: Headers) -> bool:
    """Explicit freshness (§4.2.1), or ``public``, which only lends the heuristic to a status
    that is not an error (the heuristic never applies to errors)."""
    explicit = {"max-age", "s-maxage"} if status >= 400 else {"public", "max-age", "s-maxage"}
    return bool(explicit.intersection(response_cc.directives)) or (
        header(response_headers, b"expires") is not None
    )


def has_validators(headers: Headers) -> bool:
    """Whether a stored response can be revalidated (§4.3.1)."""
    return header(headers, b"etag") is not None or header(headers, b"last-modified") is not None


def freshness_lifetime(
    status: int,
    response_cc: CacheControl,
    response_headers: Headers,
    response_time: float,
    *,
    default_ttl: float = 0.0,
    force_ttl: bool = False,
) -> float:
    """§4.2.1: s-maxage, then max-age, then Expires - Date; else the heuristic (§4.2.2).

    The configured ``default_ttl`` is the only heuristic (0: none). ``force_ttl`` replaces the
    origin's freshness with it. Neither ever applies to an error status (>= 400): an error is
    fresh only as long as its origin says. Invalid or negative values mean stale (§4.2.1, §5.3).
    """
    if status >= 400:
        default_ttl = 0.0
    if force_ttl and default_ttl > 0:
        return default_ttl
    for name in ("s-maxage", "max-age"):
        if name in response_cc:
            return float(response_cc.seconds(name) or 0)
    expires_raw = header(response_headers, b"expires")
    if expires_raw is not None:
        expires = parse_http_date(expires_raw, response_time)
        if expires is None:
            return 0.0  # §5.3: an invalid Expires, such as "0", is in the past
        date = parse_http_date(header(response_headers, b"date"), response_time)
        return max(0.0, expires - (response_time if date is None else date))
    if default_ttl > 0 and (status in HEURISTIC_STATUSES or "public" in response_cc):
        return default_ttl
    return 0.0


def initial_age(response_headers: Headers, request_time: float, response_time: float) -> float:
    """§4.2.3 corrected_initial_age from the Date and Age of a response and when it was
    requested and received."""
    date = parse_http_date(header(response_headers, b"date"))
    apparent_age = max(0.0, response_time - (response_time if date is None else date))
    age_value = _age_value(combined(response_headers, b"age"))
    response_delay = max(0.0, response_time - request_time)
    corrected_age_value = age_value + response_delay
    return max(apparent_age, corrected_age_value)


def _age_value(value: bytes | None) -> int:
    """§5.1: the first member of a list-based Age; an invalid one makes the response stale."""
    if value is None:
        return 0
    parsed = parse_delta_seconds(_text(value.split(b",", 1)[0].strip()))
    return DELTA_SECONDS_MAX if parsed is None else parsed


def current_age(initial: float, response_time: float, now: float) -> float:
    """§4.2.3 current_age = corrected_initial_age + resident_time."""
    return initial + max(0.0, now - response_time)


def stale_windows(response_cc: CacheControl, route_swr: float, route_sie: float) -> tuple[float, float, bool]:
    """RFC 5861 §3-§4 windows (directive, else route setting) and whether stale is forbidden.

    must-revalidate, proxy-revalidate and no-cache forbid serving stale (§4.2.4). s-maxage
    implies proxy-revalidate (§5.2.2.10) unless the origin itself grants a stale window.
    """
    if NO_STALE_DIRECTIVES.intersection(response_cc.directives) or _unqualified(response_cc, "no-cache"):
        return 0.0, 0.0, True
    swr = response_cc.seconds("stale-while-revalidate")
    sie = response_cc.seconds("stale-if-error")
    if "s-maxage" in response_cc and swr is None and sie is None:
        return 0.0, 0.0, True
    return float(route_swr if swr is None else swr), float(route_sie if sie is None else sie), False


def assess(
    status: int,
    response_cc: CacheControl,
    response_headers: Headers,
    request_time: float,
    response_time: float,
    *,
    default_ttl: float = 0.0,
    force_ttl: bool = False,
    route_swr: float = 0.0,
    route_sie: float = 0.0,
) -> Freshness:
    """All freshness facts of a storable response (§4.2, §5.2.2, RFC 5861)."""
    lifetime = freshness_lifetime(
        status,
        response_cc,
        response_headers,
        response_time,
        default_ttl=default_ttl,
        force_ttl=force_ttl,
    )
    swr, sie, no_stale = stale_windows(response_cc, route_swr, route_sie)
    flags = FLAG_NO_STALE if no_stale else 0
    if _unqualified(response_cc, "no-cache"):
        flags |= FLAG_NO_CACHE
    if AUTHORIZED_REUSE_DIRECTIVES.intersection(response_cc.directives):
        flags |= FLAG_AUTHORIZED_OK
    age = initial_age(response_headers, request_time, response_time)
    return Freshness(lifetime, age, swr, sie, flags)


class Reuse(enum.Enum):
    """How a stored response may answer a request (§4, §4.2.4, §5.2.1, RFC 5861)."""

    FRESH = "fresh"
    STALE = "stale"  # allowed by the request's max-stale
    STALE_WHILE_REVALIDATE = "stale-while-revalidate"
    REVALIDATE = "revalidate"  # forward with the stored validators (§4.3.1)


def reuse(freshness: Freshness, age: float, request_cc: CacheControl) -> Reuse:
    """§4.2 / §5.2.1: may a stored response with ``age`` answer a request with ``request_cc``?"""
    if "no-cache" in request_cc or freshness.flags & FLAG_NO_CACHE:
        return Reuse.REVALIDATE  # §5.2.1.4, §5.2.2.4
    if "max-age" in request_cc and age > (request_cc.seconds("max-age") or 0):
        return Reuse.REVALIDATE  # §5.2.1.1
    remaining = freshness.lifetime - age
    if "min-fresh" in request_cc and remaining < (request_cc.seconds("min-fresh") or 0):
        return Reuse.REVALIDATE  # §5.2.1.3
    if remaining > 0:
        return Reuse.FRESH
    if freshness.flags & FLAG_NO_STALE:
        return Reuse.REVALIDATE
    staleness = -remaining
    if "max-stale" in request_cc:  # §5.2.1.2: no argument accepts any staleness
        limit = request_cc.seconds("max-stale")
        if request_cc.directives["max-stale"] is None or (limit is not None and staleness <= limit):
            return Reuse.STALE
    if staleness < freshness.stale_while_revalidate:
        return Reuse.STALE_WHILE_REVALIDATE
    return Reuse.REVALIDATE


def serve_stale_on_error(freshness: Freshness, age: float, request_cc: CacheControl) -> bool:
    """RFC 5861 §4: may a stale response answer when the origin errors or is unreachable?

    The request's own ``stale-if-error`` widens the window; no-stale responses never qualify.
    """
    if freshness.flags & (FLAG_NO_STALE | FLAG_NO_CACHE):
        return False
    window = max(freshness.stale_if_error, float(request_cc.seconds("stale-if-error") or 0))
    return age - freshness.lifetime <= window


def is_error_for_stale(status: int) -> bool:
    """RFC 5861 §4: an error is a 500, 502, 503 or 504 answer."""
    return status in (500, 502, 503, 504)


def invalidates(method: str, status: int) -> bool:
    """§4.4: a non-error answer to an unsafe (or unknown) method invalidates."""
    return method not in SAFE_METHODS and 200 <= status < 400


def invalidation_targets(
    scheme: str, host: str, raw_path: bytes, raw_query: bytes, response_headers: Headers
) -> list[tuple[bytes, bytes]]:
    """§4.4: the target URI plus same-origin Location and Content-Location, as (path, query)."""
    targets = [(raw_path, raw_query)]
    base = f"{scheme}://{host}{raw_path.decode('latin-1')}"
    origin = _origin(scheme, host)
    for name in (b"location", b"content-location"):
        value = header(response_headers, name)
        if not value:
            continue
        parts = urllib.parse.urlsplit(urllib.parse.urljoin(base, value.decode("latin-1").strip()))
        if _origin(parts.scheme, parts.netloc) == origin:
            target = (parts.path.encode("latin-1") or b"/", parts.query.encode("latin-1"))
            if target not in targets:
                targets.append(target)
    return targets


_DEFAULT_PORTS = {"http": "80", "https": "443"}


def _origin(scheme: str, netloc: str) -> tuple[str, str]:
    scheme, netloc = scheme.lower(), netloc.lower()
    default = _DEFAULT_PORTS.get(scheme)
    if default and netloc.endswith(":" + default):
        netloc = netloc[: -len(default) - 1]
    return scheme, netloc


def cache_status(
    *,
    hit: bool = False,
    fwd: str | None = None,
    fwd_status: int | None = None,
    ttl: float | None = None,
    stored: bool = False,
    collapsed: bool = False,
    detail: str | None = None,
) -> bytes:
    """A Cache-Status member for this cache (RFC 9211 §2)."""
    parts = ["gateway"]
    if hit:
        parts.append("hit")
    if fwd:
        parts.append(f"fwd={fwd}")
    if fwd_status is not None:
        parts.append(f"fwd-status={fwd_status}")
    if ttl is not None:
        parts.append(f"ttl={int(ttl)}")
    if stored:
        parts.append("stored")
    if collapsed:
        parts.append("collapsed")
    if detail:
        parts.append(f"detail={detail}")
    return "; ".join(parts).encode("ascii")


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1").strip()
