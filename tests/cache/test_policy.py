"""RFC 9111 (with RFC 5861, RFC 9211) decisions of `gateway.cache.policy`, section by section."""

from __future__ import annotations

import pytest

from gateway.cache import policy
from gateway.cache.policy import Freshness, Reuse
from gateway.http.cache_control import DELTA_SECONDS_MAX, CacheControl, parse_cache_control
from gateway.http.dates import format_http_date, parse_http_date

H = list[tuple[bytes, bytes]]
NOW = 1_700_000_000.0
DATE = format_http_date(NOW)


def cc(value: str) -> CacheControl:
    return parse_cache_control(value.encode())


# -- §5.2 Cache-Control parsing ------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "name", "argument"),
    [
        ("max-age=60", "max-age", "60"),
        ("MAX-AGE=60", "max-age", "60"),
        ('max-age="60"', "max-age", "60"),  # §5.2: recipients accept the quoted form
        ("public, max-age=60", "public", None),
        ('no-cache="set-cookie, x-a", max-age=5', "max-age", "5"),
        ("max-age=5, max-age=10", "max-age", "5"),  # §4.2.1: first occurrence
        ("  s-maxage=7 ", "s-maxage", "7"),
    ],
)
def test_cache_control_parsing(value: str, name: str, argument: str | None) -> None:
    parsed = cc(value)
    assert name in parsed
    assert parsed.directives[name] == argument


@pytest.mark.parametrize("value", ["max-age =100", "max-age= 100", "max-age = 100"])
def test_whitespace_around_equals_is_not_a_directive(value: str) -> None:
    assert "max-age" not in cc(value)


def test_cache_control_several_field_lines_combine() -> None:
    parsed = parse_cache_control([b"public", b"max-age=3"])
    assert "public" in parsed
    assert parsed.seconds("max-age") == 3


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("max-age=0", 0),
        ("max-age=0010", 10),
        ("max-age=-1", None),
        ("max-age=1.5", None),
        ("max-age=abc", None),
        ("max-age", None),
        ("max-age=99999999999", 2147483648),
    ],
)
def test_delta_seconds(value: str, seconds: int | None) -> None:
    assert cc(value).seconds("max-age") == seconds


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"Sun, 06 Nov 1994 08:49:37 GMT", 784111777.0),
        (b"Sunday, 06-Nov-94 08:49:37 GMT", 784111777.0),  # obsolete RFC 850 form
        (b"Sun Nov  6 08:49:37 1994", 784111777.0),  # asctime form
        (b"THU, 18 AUG 2050 02:01:18 gMT", 2544400878.0),  # names are case-insensitive
        (b"0", None),
        (b"yesterday", None),
        (None, None),
        # RFC 9110 §5.6.7 grammar only: everything below is invalid, so Expires means stale.
        (b"Thu, 18 Aug 2050 02:01:18 UTC", None),
        (b"Thu, 18 Aug 50 02:01:18 GMT", None),
        (b"Thu 18 Aug 2050 02:01:18 GMT", None),
        (b"Thu, 18  Aug  2050 02:01:18 GMT", None),
        (b"Thu, 18-Aug-2050 02:01:18 GMT", None),
        (b"Thu, 18 Aug 2050 02.01.18 GMT", None),
        (b"Thu, 18 Aug 2050 2:01:18 GMT", None),
        (b"Thu, 32 Aug 2050 02:01:18 GMT", None),
    ],
)
def test_http_date(value: bytes | None, expected: float | None) -> None:
    assert parse_http_date(value) == expected


def test_rfc850_two_digit_years_are_at_most_50_years_ahead() -> None:
    assert parse_http_date(b"Thursday, 18-Aug-50 02:01:18 GMT", NOW) == 2544400878.0
    assert parse_http_date(b"Thursday, 18-Aug-99 02:01:18 GMT", NOW) == 934941678.0


# -- §3 storing responses ------------------------------------------------------------------


def refusal(
    response: H,
    *,
    status: int = 200,
    request: H | None = None,
    method: str = "GET",
    default_ttl: float = 0.0,
    cache_errors: frozenset[int] = frozenset(),
) -> str | None:
    request = request or []
    return policy.refusal(
        method,
        status,
        policy_cc(request),
        policy_cc(response),
        request,
        response,
        default_ttl=default_ttl,
        cache_errors=cache_errors,
    )


def policy_cc(headers: H) -> CacheControl:
    return parse_cache_control([v for k, v in headers if k == b"cache-control"])


@pytest.mark.parametrize(
    ("response", "status", "expected"),
    [
        ([(b"cache-control", b"max-age=60")], 200, None),
        ([(b"cache-control", b"public")], 200, None),
        ([(b"expires", DATE)], 200, None),
        ([(b"etag", b'"a"')], 200, None),  # heuristically cacheable + validator: revalidatable
        ([(b"last-modified", DATE)], 404, None),
        ([], 200, "not-cacheable"),  # nothing to reuse it with when GATEWAY_CACHE_TTL=0
        ([(b"etag", b'"a"')], 302, "not-cacheable"),  # 302 is not heuristically cacheable
        ([(b"cache-control", b"max-age=60")], 302, None),  # explicit freshness: any final status
        ([(b"cache-control", b"max-age=60")], 500, "error-status"),  # unless the route opts in
        ([(b"cache-control", b"max-age=60")], 299, None),  # unknown but final
        ([(b"cache-control", b"max-age=60")], 206, "status"),  # §3.3: never a full object
        ([(b"cache-control", b"max-age=60")], 304, "status"),
        ([(b"cache-control", b"max-age=60")], 429, "status"),
        ([(b"cache-control", b"max-age=60")], 101, "status"),
        ([(b"cache-control", b"max-age=60, no-store")], 200, "no-store"),
        ([(b"cache-control", b"no-store, max-age=60")], 200, "no-store"),
        ([(b"cache-control", b"max-age=60, private")], 200, "private"),
        ([(b"cache-control", b'max-age=60, private="x-user"')], 200, None),  # field withheld
        ([(b"cache-control", b"max-age=60"), (b"set-cookie", b"a=b")], 200, "set-cookie"),
        ([(b"cache-control", b"max-age=60"), (b"vary", b"accept, *")], 200, "vary-star"),
        ([(b"cache-control", b"max-age=60, must-understand, no-store")], 200, None),  # §5.2.2.3
        ([(b"cache-control", b"max-age=60, must-understand, no-store")], 299, "must-understand"),
    ],
)
def test_storable(response: H, status: int, expected: str | None) -> None:
    assert refusal(response, status=status) == expected


def test_the_proxys_own_502_is_never_stored_even_when_the_route_stores_502s() -> None:
    problem = [(b"cache-control", b"max-age=60"), (b"content-type", b"application/problem+json")]
    origin = [(b"cache-control", b"max-age=60"), (b"content-type", b"text/html")]
    opted_in = frozenset({502})
    assert refusal(problem, status=502, cache_errors=opted_in) == "gateway-error"
    assert refusal(origin, status=502, cache_errors=opted_in) is None
    assert refusal(origin, status=502) == "error-status"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('no-cache="a"', {b"a"}),
        ('no-cache="A, b", private="c"', {b"a", b"b", b"c"}),
        ("no-cache", set()),
        ("private", set()),
        ("max-age=1", set()),
    ],
)
def test_withheld_fields(value: str, expected: set[bytes]) -> None:
    """§5.2.2.4, §5.2.2.7: qualified forms withhold the named fields only."""
    assert policy.withheld_fields(cc(value)) == expected


def test_qualified_no_cache_does_not_force_revalidation() -> None:
    assert policy.reuse(facts('no-cache="a", max-age=60'), 10, cc("")) is Reuse.FRESH
    assert policy.reuse(facts("no-cache, max-age=60"), 10, cc("")) is Reuse.REVALIDATE


def test_default_ttl_makes_plain_200_storable() -> None:
    assert refusal([], default_ttl=30) is None
    assert refusal([], status=302, default_ttl=30) == "not-cacheable"


@pytest.mark.parametrize("method", ["HEAD", "POST", "PUT"])
def test_only_get_responses_are_stored(method: str) -> None:
    assert refusal([(b"cache-control", b"max-age=60")], method=method) == "method"


def test_request_no_store_forbids_storing() -> None:  # §5.2.1.5
    request = [(b"cache-control", b"no-store")]
    assert refusal([(b"cache-control", b"max-age=60")], request=request) == "request-no-store"


@pytest.mark.parametrize(
    ("directives", "expected"),
    [
        ("max-age=60", "authorization"),
        ("max-age=60, public", None),
        ("s-maxage=60", None),
        ("max-age=60, must-revalidate", None),
    ],
)
def test_authorization_needs_explicit_permission(directives: str, expected: str | None) -> None:
    """§3.5."""
    request = [(b"authorization", b"Bearer x")]
    assert refusal([(b"cache-control", directives.encode())], request=request) == expected


# -- §4.2.1 freshness lifetime -------------------------------------------------------------


def lifetime(response: H, *, status: int = 200, default_ttl: float = 0.0, force_ttl: bool = False) -> float:
    return policy.freshness_lifetime(
        status, policy_cc(response), response, NOW, default_ttl=default_ttl, force_ttl=force_ttl
    )


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ([(b"cache-control", b"s-maxage=10, max-age=20")], 10),
        ([(b"cache-control", b"max-age=20"), (b"expires", format_http_date(NOW + 99))], 20),
        ([(b"date", DATE), (b"expires", format_http_date(NOW + 99))], 99),
        ([(b"expires", format_http_date(NOW + 99))], 99),  # no Date: time received
        ([(b"date", DATE), (b"expires", format_http_date(NOW - 5))], 0),
        ([(b"date", DATE), (b"expires", b"0")], 0),  # §5.3: invalid means the past
        ([(b"cache-control", b"max-age=abc")], 0),  # §4.2.1: invalid freshness is stale
        ([(b"cache-control", b"max-age=-5")], 0),
        ([(b"cache-control", b'max-age="30"')], 30),
        ([], 0),
    ],
)
def test_freshness_lifetime(response: H, expected: float) -> None:
    assert lifetime(response) == expected


def test_configured_ttl_is_the_heuristic() -> None:
    """§4.2.2: only without explicit freshness, only for heuristically cacheable statuses."""
    assert lifetime([], default_ttl=30) == 30
    assert lifetime([(b"cache-control", b"max-age=5")], default_ttl=30) == 5
    assert lifetime([], status=302, default_ttl=30) == 0
    assert lifetime([(b"cache-control", b"public")], status=302, default_ttl=30) == 30


def test_force_ttl_overrides_origin_freshness() -> None:
    assert lifetime([(b"cache-control", b"max-age=5")], default_ttl=30, force_ttl=True) == 30


# -- §4.2.3 age ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "request_time", "response_time", "expected"),
    [
        ([(b"date", DATE)], NOW, NOW, 0),
        ([(b"date", format_http_date(NOW - 10))], NOW, NOW, 10),  # apparent_age
        ([(b"date", DATE), (b"age", b"30")], NOW - 2, NOW, 32),  # age_value + response_delay
        ([(b"date", format_http_date(NOW + 50))], NOW, NOW, 0),  # clock skew: never negative
        ([(b"age", b"junk")], NOW, NOW, DELTA_SECONDS_MAX),  # §5.1: invalid Age means stale
        ([(b"age", b"-5")], NOW, NOW, DELTA_SECONDS_MAX),
        ([(b"age", b"30.0")], NOW, NOW, DELTA_SECONDS_MAX),
        ([(b"age", b"30;x=1")], NOW, NOW, DELTA_SECONDS_MAX),
        ([(b"age", b"30, 0")], NOW, NOW, 30),  # §5.1: a list-based Age: its first member
        ([(b"age", b"0"), (b"age", b"30")], NOW, NOW, 0),
        ([], NOW - 1, NOW, 1),
    ],
)
def test_initial_age(headers: H, request_time: float, response_time: float, expected: float) -> None:
    assert policy.initial_age(headers, request_time, response_time) == expected


def test_current_age_adds_resident_time() -> None:
    assert policy.current_age(5, NOW, NOW + 10) == 15


# -- §4.2, §5.2.1, RFC 5861 reuse ----------------------------------------------------------


def facts(response: str, *, swr: float = 0.0, sie: float = 0.0) -> Freshness:
    headers = [(b"cache-control", response.encode()), (b"date", DATE)]
    return policy.assess(200, cc(response), headers, NOW, NOW, route_swr=swr, route_sie=sie)


@pytest.mark.parametrize(
    ("response", "age", "request_cc", "expected"),
    [
        ("max-age=60", 10, "", Reuse.FRESH),
        ("max-age=60", 60, "", Reuse.REVALIDATE),  # fresh only while lifetime > age
        ("max-age=60", 70, "max-stale", Reuse.STALE),  # §5.2.1.2 without argument
        ("max-age=60", 70, "max-stale=20", Reuse.STALE),
        ("max-age=60", 90, "max-stale=20", Reuse.REVALIDATE),
        ("max-age=60", 10, "max-age=5", Reuse.REVALIDATE),  # §5.2.1.1
        ("max-age=60", 10, "max-age=20", Reuse.FRESH),
        ("max-age=60", 50, "min-fresh=20", Reuse.REVALIDATE),  # §5.2.1.3
        ("max-age=60", 10, "min-fresh=20", Reuse.FRESH),
        ("max-age=60", 10, "no-cache", Reuse.REVALIDATE),  # §5.2.1.4
        ("max-age=60, no-cache", 10, "", Reuse.REVALIDATE),  # §5.2.2.4
        ("max-age=60, must-revalidate", 70, "max-stale", Reuse.REVALIDATE),  # §5.2.2.2
        ("max-age=60, proxy-revalidate", 70, "max-stale", Reuse.REVALIDATE),  # §5.2.2.8
        ("s-maxage=60", 70, "max-stale", Reuse.REVALIDATE),  # §5.2.2.10
        ("max-age=60, stale-while-revalidate=30", 80, "", Reuse.STALE_WHILE_REVALIDATE),
        ("max-age=60, stale-while-revalidate=30", 95, "", Reuse.REVALIDATE),
        ("s-maxage=60, stale-while-revalidate=30", 80, "", Reuse.STALE_WHILE_REVALIDATE),
        ("max-age=60, must-revalidate, stale-while-revalidate=30", 80, "", Reuse.REVALIDATE),
    ],
)
def test_reuse(response: str, age: float, request_cc: str, expected: Reuse) -> None:
    assert policy.reuse(facts(response), age, cc(request_cc)) is expected


def test_route_stale_while_revalidate_applies_without_directive() -> None:
    assert policy.reuse(facts("max-age=60", swr=30), 80, cc("")) is Reuse.STALE_WHILE_REVALIDATE
    assert (
        policy.reuse(facts("max-age=60, stale-while-revalidate=5", swr=30), 80, cc("")) is Reuse.REVALIDATE
    )  # the origin's directive wins over the route default


@pytest.mark.parametrize(
    ("response", "age", "request_cc", "route_sie", "expected"),
    [
        ("max-age=60, stale-if-error=30", 80, "", 0, True),
        ("max-age=60, stale-if-error=30", 100, "", 0, False),
        ("max-age=60", 80, "", 30, True),
        ("max-age=60", 80, "stale-if-error=30", 0, True),  # RFC 5861 §4 request directive
        ("max-age=60, must-revalidate, stale-if-error=30", 80, "", 0, False),
        ("max-age=60, no-cache", 80, "", 30, False),
        ("s-maxage=60", 80, "", 30, False),
    ],
)
def test_stale_if_error(response: str, age: float, request_cc: str, route_sie: float, expected: bool) -> None:
    freshness = facts(response, sie=route_sie)
    assert policy.serve_stale_on_error(freshness, age, cc(request_cc)) is expected


@pytest.mark.parametrize(
    ("status", "expected"), [(500, True), (502, True), (503, True), (504, True), (404, False), (501, False)]
)
def test_errors_that_stale_if_error_covers(status: int, expected: bool) -> None:
    assert policy.is_error_for_stale(status) is expected


def test_authorization_flag() -> None:
    assert facts("public, max-age=1").flags & policy.FLAG_AUTHORIZED_OK
    assert not facts("max-age=1").flags & policy.FLAG_AUTHORIZED_OK


@pytest.mark.parametrize(
    ("lifetime", "swr", "sie", "validators", "expected"),
    [
        (60, 0, 0, False, 60),
        (60, 30, 90, False, 150),
        (0, 0, 0, False, 0),
        (0, 0, 0, True, 60),
        (600, 0, 0, True, 1200),
    ],
)
def test_retention(lifetime: float, swr: float, sie: float, validators: bool, expected: float) -> None:
    assert Freshness(lifetime, 0, swr, sie, 0).retention(validators) == expected


# -- §4.4 invalidation ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "status", "expected"),
    [
        ("POST", 200, True),
        ("PUT", 204, True),
        ("DELETE", 302, True),
        ("PATCH", 200, True),
        ("PURGE", 200, True),
        ("POST", 404, False),
        ("POST", 500, False),
        ("GET", 200, False),
        ("HEAD", 200, False),
        ("OPTIONS", 200, False),
    ],
)
def test_invalidates(method: str, status: int, expected: bool) -> None:
    assert policy.invalidates(method, status) is expected


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        (b"/b?x=1", (b"/b", b"x=1")),
        (b"c", (b"/a/c", b"")),  # relative to the target
        (b"http://example.com/d", (b"/d", b"")),
        (b"http://EXAMPLE.com:80/d", (b"/d", b"")),
        (b"https://example.com/d", None),  # another origin (scheme)
        (b"http://evil.test/d", None),
    ],
)
def test_invalidation_targets(location: bytes, expected: tuple[bytes, bytes] | None) -> None:
    targets = policy.invalidation_targets("http", "example.com", b"/a/x", b"q=1", [(b"location", location)])
    assert targets[0] == (b"/a/x", b"q=1")
    assert (targets[1] if len(targets) > 1 else None) == expected


def test_content_location_is_a_target_too() -> None:
    targets = policy.invalidation_targets(
        "https", "example.com", b"/a", b"", [(b"content-location", b"/a/1")]
    )
    assert targets == [(b"/a", b""), (b"/a/1", b"")]


# -- §4.1 keys and variants ----------------------------------------------------------------


def test_primary_key_format() -> None:
    key = policy.primary_key("http", "Example.com", "api", b"/p", b"b=2&a=1")
    assert key == "/p?b=2&a=1|http|example.com|api"
    assert policy.primary_key("https", "h", "r", b"/p", b"") == "/p|https|h|r"


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (b"a=1&utm_source=x&b=2", b"a=1&b=2"),
        (b"utm_source=x", b""),
        (b"utm%5Fsource=x&a=%41", b"a=%41"),
        (b"a=1&a=1", b"a=1&a=1"),
        (b"fbclid", b""),
    ],
)
def test_ignored_query_params(query: bytes, expected: bytes) -> None:
    assert policy.strip_query(query, frozenset({"utm_source", "fbclid"})) == expected


def test_raw_path_bytes_stay_distinct() -> None:
    assert policy.primary_key("http", "h", "r", b"/a%2Fb", b"") != policy.primary_key(
        "http", "h", "r", b"/a/b", b""
    )


def test_vary_names_normalized() -> None:
    assert (
        policy.vary_names([(b"vary", b"Accept-Encoding, accept"), (b"vary", b"X-A")])
        == "accept,accept-encoding,x-a"
    )
    assert policy.vary_names([]) == ""


def test_variant_material_normalizes_and_distinguishes_absent() -> None:
    a = policy.variant_material("accept,x-a", [(b"accept", b"text/html,  application/json")])
    b = policy.variant_material("accept,x-a", [(b"accept", b"text/html"), (b"accept", b"application/json")])
    assert a == b
    empty = policy.variant_material("x-a", [(b"x-a", b"")])
    absent = policy.variant_material("x-a", [])
    assert empty != absent
    assert policy.variant_id(b"") == ""
    assert policy.variant_id(a) != policy.variant_id(empty)


def test_tags() -> None:
    headers = [(b"surrogate-key", b"a b"), (b"cache-tag", b"c, d"), (b"surrogate-key", b"a")]
    assert policy.tags(headers) == ("a", "b", "c", "d")


# -- RFC 9211 Cache-Status -----------------------------------------------------------------


def test_cache_status_values() -> None:
    assert policy.cache_status(hit=True, ttl=12.7) == b"gateway; hit; ttl=12"
    assert (
        policy.cache_status(fwd="uri-miss", fwd_status=200, stored=True)
        == b"gateway; fwd=uri-miss; fwd-status=200; stored"
    )
    assert policy.cache_status(fwd="bypass", detail="cookie") == b"gateway; fwd=bypass; detail=cookie"
