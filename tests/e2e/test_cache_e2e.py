"""The shared cache end to end: two real gateway processes on one real Redis in front of the
recording upstream. Each test checks what the client sees (status, X-Cache, Cache-Status, Age,
body), what reached the upstream, and what Redis holds."""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.support.cache_e2e import TOKEN, entries, expiries, members, poll, purge, target
from tests.support.gateway_process import GatewayProcess
from tests.support.redis_server import RedisServer
from tests.support.upstream import RecordingUpstream

Pair = tuple[GatewayProcess, GatewayProcess]


@pytest.fixture(scope="module")
def pair_processes(upstream_server: RecordingUpstream, redis_server: RedisServer) -> Iterator[Pair]:
    """Gateways A and B, default cache settings (GATEWAY_CACHE_TTL=0), one shared Redis."""
    if not redis_server.ping():
        redis_server.start()
    env = {
        "GATEWAY_UPSTREAM_URL": upstream_server.url,
        "REDIS_URL": redis_server.url,
        "GATEWAY_ADMIN_TOKEN": TOKEN,
        "GATEWAY_ACCESS_LOG": "false",
    }
    with contextlib.ExitStack() as stack:
        a = stack.enter_context(GatewayProcess(env))
        b = stack.enter_context(GatewayProcess(env))
        yield a, b


@pytest.fixture
def pair(pair_processes: Pair, redis_url: str, upstream: RecordingUpstream) -> Pair:
    """The module's gateways with a flushed Redis and a reset upstream."""
    return pair_processes


#: Replicas behind one load balancer see the same Host; it is part of the key (§4.1).
SITE = {"Host": "api.example"}


def get(gw: GatewayProcess, raw_target: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.get(f"{gw.url}{raw_target}", headers={**SITE, **(headers or {})}, timeout=5)


def path_of(raw_target: str) -> str:
    return raw_target.partition("?")[0]


# -- 1. sharing, Date and Age, read-your-writes --------------------------------------------------


def test_a_stores_and_b_serves_with_the_stored_date_and_age(
    pair: Pair, upstream: RecordingUpstream, redis_url: str
) -> None:
    a, b = pair
    date = email.utils.formatdate(time.time() - 5, usegmt=True)  # the origin's clock: 5 s ago
    url = target("share", "max-age=60", h=[f"Date:{date}"])

    miss = get(a, url)
    hit = get(b, url)

    assert miss.status_code == hit.status_code == 200
    assert miss.headers["x-cache"] == "MISS"
    assert members(miss)[:2] == ["gateway", "fwd=uri-miss"] and "stored" in members(miss)
    assert "age" not in miss.headers
    assert hit.headers["x-cache"] == "HIT"
    assert hit.content == miss.content == b"/cache/share #1"
    assert hit.headers["date"] == date  # replayed, not regenerated
    assert 5 <= int(hit.headers["age"]) <= 8  # apparent age counts (§4.2.3)
    assert "hit" in members(hit)
    ttl = int(next(p for p in members(hit) if p.startswith("ttl="))[4:])
    assert 52 <= ttl <= 55
    assert upstream.hits["/cache/share"] == 1
    names = entries(redis_url, url)
    assert len(names) == 1
    assert all(0 < ms <= 86_400_000 for ms in expiries(redis_url, names))  # every key expires


def test_read_your_writes_across_processes(pair: Pair, upstream: RecordingUpstream) -> None:
    """B asks right after A's answer completed: the entry is already there, every time."""
    a, b = pair
    with httpx.Client(timeout=5, headers=SITE) as client:
        for i in range(15):
            url = target(f"ryw{i}", "max-age=60")
            assert client.get(f"{a.url}{url}").headers["x-cache"] == "MISS"
            hit = client.get(f"{b.url}{url}")
            assert hit.headers["x-cache"] == "HIT", i
            # found at once, not by waiting on A's collapsing lock: stored before the last byte
            assert "detail=collapsed" not in members(hit), i
    assert sum(upstream.hits.values()) == 15


def test_head_and_conditional_requests_are_answered_from_the_stored_get(
    pair: Pair, upstream: RecordingUpstream
) -> None:
    a, b = pair
    url = target("cond", "max-age=60", h=['ETag:"v1"'])
    assert get(a, url).headers["x-cache"] == "MISS"

    head = httpx.head(f"{b.url}{url}", headers=SITE, timeout=5)
    not_modified = get(b, url, headers={"If-None-Match": '"v1"'})

    assert head.status_code == 200 and head.headers["x-cache"] == "HIT" and head.content == b""
    assert not_modified.status_code == 304 and not_modified.headers["x-cache"] == "HIT"
    assert not_modified.headers["etag"] == '"v1"'
    assert upstream.hits["/cache/cond"] == 1


# -- 2. collapsing ------------------------------------------------------------------------------


async def test_concurrent_misses_on_two_processes_make_one_upstream_request(
    pair: Pair, upstream: RecordingUpstream
) -> None:
    a, b = pair
    url = target("stampede", "max-age=60", delay="0.6")
    async with httpx.AsyncClient(timeout=10, headers=SITE) as client:
        responses = await asyncio.gather(*(client.get(f"{(a, b)[i % 2].url}{url}") for i in range(20)))

    assert upstream.hits["/cache/stampede"] == 1
    assert [r.status_code for r in responses] == [200] * 20
    assert {r.content for r in responses} == {b"/cache/stampede #1"}
    caches = [r.headers["x-cache"] for r in responses]
    assert caches.count("MISS") == 1 and caches.count("HIT") == 19
    collapsed = [i % 2 for i, r in enumerate(responses) if "detail=collapsed" in members(r)]
    assert set(collapsed) == {0, 1}  # followers in both processes waited for the one leader


# -- 3. purge -----------------------------------------------------------------------------------


def test_purge_by_url_through_a_makes_b_miss(pair: Pair, upstream: RecordingUpstream, redis_url: str) -> None:
    a, b = pair
    url, other = target("pu", "max-age=60"), target("pu", "max-age=60", x="1")
    for u in (url, other):
        get(a, u)
        assert get(b, u).headers["x-cache"] == "HIT"

    answer = purge(a.url, {"url": url})

    assert answer.status_code == 200 and answer.json() == {"purged": 1, "soft": False}
    assert entries(redis_url, url) == [] and len(entries(redis_url, other)) == 1
    again = get(b, url)
    assert again.headers["x-cache"] == "MISS" and again.content == b"/cache/pu #3"
    assert get(b, other).headers["x-cache"] == "HIT"


def test_purge_by_prefix(pair: Pair, upstream: RecordingUpstream) -> None:
    a, b = pair
    inside = [target("pp/1", "max-age=60"), target("pp/2", "max-age=60")]
    outside = target("ppx", "max-age=60")
    for u in [*inside, outside]:
        get(a, u)

    answer = purge(a.url, {"prefix": "/cache/pp/"})

    assert answer.json() == {"purged": 2, "soft": False}
    assert [get(b, u).headers["x-cache"] for u in inside] == ["MISS", "MISS"]
    assert get(b, outside).headers["x-cache"] == "HIT"


def test_purge_by_surrogate_key_tag(pair: Pair, upstream: RecordingUpstream) -> None:
    a, b = pair
    tagged = [
        target("pt1", "max-age=60", h=["Surrogate-Key:product-42 catalog"]),
        target("pt2", "max-age=60", h=["Cache-Tag:product-42,other"]),
    ]
    untagged = target("pt3", "max-age=60", h=["Surrogate-Key:product-7"])
    for u in [*tagged, untagged]:
        get(a, u)

    answer = purge(a.url, {"tag": "product-42"})

    assert answer.json() == {"purged": 2, "soft": False}
    assert [get(b, u).headers["x-cache"] for u in tagged] == ["MISS", "MISS"]
    assert get(b, untagged).headers["x-cache"] == "HIT"


def test_soft_purge_revalidates_with_the_stored_validator(pair: Pair, upstream: RecordingUpstream) -> None:
    a, b = pair
    url = target("soft304", "max-age=60", h=['ETag:"v1"'])
    get(a, url)

    answer = purge(a.url, {"url": url, "soft": True})
    revalidated = get(b, url)

    assert answer.json() == {"purged": 1, "soft": True}
    assert revalidated.status_code == 200 and revalidated.headers["x-cache"] == "EXPIRED"
    assert revalidated.content == b"/cache/soft304 #1"  # the stored body, freshened by the 304
    assert "fwd=stale" in members(revalidated) and "fwd-status=304" in members(revalidated)
    assert upstream.requests[-1].header(b"if-none-match") == b'"v1"'
    assert upstream.hits["/cache/soft304"] == 2
    assert get(a, url).headers["x-cache"] == "HIT"  # fresh again, for every process


def test_soft_purge_serves_stale_while_revalidating(pair: Pair, upstream: RecordingUpstream) -> None:
    a, b = pair
    url = target("softswr", "max-age=60, stale-while-revalidate=30")
    get(a, url)

    purge(a.url, {"url": url, "soft": True})
    stale = get(b, url)

    assert stale.headers["x-cache"] == "STALE" and stale.content == b"/cache/softswr #1"
    assert "detail=stale-while-revalidate" in members(stale)
    poll(lambda: upstream.hits["/cache/softswr"] == 2 or None, timeout=3)
    refreshed = poll(lambda: ((r := get(a, url)).headers["x-cache"] == "HIT" and r) or None, 3)
    assert refreshed.content == b"/cache/softswr #2"
    assert upstream.hits["/cache/softswr"] == 2  # exactly one background refresh


@pytest.mark.parametrize(
    ("authorization", "status"),
    [
        (None, 401),
        ("Basic YWRtaW46eA==", 401),
        (f"Bearer {TOKEN}x", 403),
        ("Bearer wrong", 403),
    ],
)
def test_purge_needs_the_admin_token(
    pair: Pair, upstream: RecordingUpstream, authorization: str | None, status: int
) -> None:
    a, b = pair
    url = target("guarded", "max-age=60")
    get(a, url)
    headers = {"Authorization": authorization} if authorization else {}

    answer = httpx.post(f"{a.url}/__gateway/purge", json={"url": url}, headers=headers)

    assert answer.status_code == status
    assert answer.headers["content-type"] == "application/problem+json"
    if status == 401:
        assert answer.headers["www-authenticate"].lower().startswith("bearer")
    assert TOKEN not in answer.text
    assert get(b, url).headers["x-cache"] == "HIT"  # nothing was purged


# -- 4. invalidation ----------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_a_successful_unsafe_request_through_b_invalidates_for_a(
    pair: Pair, upstream: RecordingUpstream, method: str
) -> None:
    a, b = pair
    url = target(f"inv-{method}", "max-age=60")
    get(a, url)
    assert get(a, url).headers["x-cache"] == "HIT"

    assert httpx.request(method, f"{b.url}{url}", headers=SITE, timeout=5).status_code == 200
    after = get(a, url)

    assert after.headers["x-cache"] == "MISS"
    assert upstream.hits[path_of(url)] == 3  # GET, the unsafe request, GET again


@pytest.mark.parametrize("status", [404, 409, 500, 503])
def test_an_error_answer_to_an_unsafe_request_does_not_invalidate(
    pair: Pair, upstream: RecordingUpstream, status: int
) -> None:
    a, b = pair
    url = target(f"noinv-{status}", "max-age=60")
    get(a, url)

    answer = httpx.post(f"{b.url}{url}", headers={**SITE, "X-Answer-Status": str(status)}, timeout=5)

    assert answer.status_code == status
    assert get(a, url).headers["x-cache"] == "HIT"


def test_location_and_content_location_of_a_write_are_invalidated(
    pair: Pair, upstream: RecordingUpstream
) -> None:
    a, b = pair
    located, content_located = target("loc-a", "max-age=60"), target("loc-b", "max-age=60")
    for u in (located, content_located):
        get(a, u)

    httpx.post(f"{b.url}/cache/orders", headers={**SITE, "X-Answer-Header": f"Location:{located}"})
    httpx.post(
        f"{b.url}/cache/orders", headers={**SITE, "X-Answer-Header": f"Content-Location:{content_located}"}
    )

    assert get(a, located).headers["x-cache"] == "MISS"
    assert get(a, content_located).headers["x-cache"] == "MISS"


# -- 5. never stored ----------------------------------------------------------------------------

# case: (Cache-Control the origin sends, extra origin header fields, request headers)
NEVER_STORED: dict[str, tuple[str, list[str], dict[str, str]]] = {
    "private": ("private, max-age=60", [], {}),
    "no-store": ("no-store, max-age=60", [], {}),
    "request-no-store": ("max-age=60", [], {"Cache-Control": "no-store"}),
    "set-cookie": ("max-age=60", ["Set-Cookie:session=alice"], {}),
    "authorization": ("max-age=60", [], {"Authorization": "Bearer alice"}),
    "vary-star": ("max-age=60", ["Vary:*"], {}),
    "status-429": ("max-age=60", [], {"X-Answer-Status": "429"}),
}


@pytest.mark.parametrize("case", sorted(NEVER_STORED))
def test_never_stored(pair: Pair, upstream: RecordingUpstream, redis_url: str, case: str) -> None:
    a, b = pair
    cc, fields, request_headers = NEVER_STORED[case]
    url = target(f"never-{case}", cc, h=fields)

    first = get(a, url, headers=request_headers)
    second = get(b, url, headers=request_headers)

    assert first.headers["x-cache"] == second.headers["x-cache"] == "MISS"
    assert "stored" not in members(first)
    assert first.content != second.content  # each came from the upstream
    assert upstream.hits[path_of(url)] == 2
    assert entries(redis_url, url) == []


@pytest.mark.parametrize("cc", ["public, max-age=60", "s-maxage=60", "max-age=60, must-revalidate"])
def test_a_response_to_authorization_is_stored_when_the_origin_allows_it(
    pair: Pair, upstream: RecordingUpstream, cc: str
) -> None:
    a, b = pair
    url = target("authok", cc)
    alice, bob = {"Authorization": "Bearer alice"}, {"Authorization": "Bearer bob"}

    assert get(a, url, headers=alice).headers["x-cache"] == "MISS"
    hit = get(b, url, headers=bob)

    assert hit.headers["x-cache"] == "HIT" and upstream.hits["/cache/authok"] == 1


def test_an_entry_stored_without_authorization_never_answers_a_request_with_it(
    pair: Pair, upstream: RecordingUpstream
) -> None:
    a, b = pair
    url = target("anon", "max-age=60")
    get(a, url)
    assert get(b, url).headers["x-cache"] == "HIT"

    with_auth = get(b, url, headers={"Authorization": "Bearer alice"})

    assert with_auth.headers["x-cache"] != "HIT" and with_auth.content == b"/cache/anon #2"


# -- 6. Vary ------------------------------------------------------------------------------------


def test_vary_keeps_one_variant_per_accept_encoding(
    pair: Pair, upstream: RecordingUpstream, redis_url: str
) -> None:
    a, b = pair
    url = target("vary", "max-age=60", h=["Vary:Accept-Encoding"])
    gzip, plain = {"Accept-Encoding": "gzip"}, {"Accept-Encoding": "identity"}

    first = [get(a, url, headers=gzip), get(a, url, headers=plain)]
    second = [get(b, url, headers=gzip), get(b, url, headers=plain)]

    assert [r.headers["x-cache"] for r in first] == ["MISS", "MISS"]
    assert "fwd=vary-miss" in members(first[1])
    assert [r.headers["x-cache"] for r in second] == ["HIT", "HIT"]
    assert [r.content for r in second] == [b"/cache/vary #1", b"/cache/vary #2"]
    assert upstream.hits["/cache/vary"] == 2
    assert len(entries(redis_url, url)) == 1  # one hash per URL, one field per variant


# -- 7. TTL=0: only what the origin makes storable ---------------------------------------------


def test_without_a_ttl_a_response_without_freshness_or_validator_is_not_stored(
    pair: Pair, upstream: RecordingUpstream, redis_url: str
) -> None:
    a, b = pair
    url = target("plain")
    assert [get(gw, url).headers["x-cache"] for gw in (a, b)] == ["MISS", "MISS"]
    assert upstream.hits["/cache/plain"] == 2 and entries(redis_url, url) == []


def test_without_a_ttl_a_validator_only_response_is_stored_and_revalidated(
    pair: Pair, upstream: RecordingUpstream
) -> None:
    a, b = pair
    url = target("validator", h=['ETag:"e1"'])
    get(a, url)

    again = get(b, url)

    assert again.headers["x-cache"] == "EXPIRED" and "fwd-status=304" in members(again)
    assert again.content == b"/cache/validator #1"
    assert upstream.requests[-1].header(b"if-none-match") == b'"e1"'


@pytest.mark.parametrize(
    ("age", "served"),
    [
        ("abc", False),
        ("-10", False),
        ("10.0", False),
        ("10;x=1", False),  # §5.1: invalid: stale
        ("7200, 0", False),  # a list-based Age: its first member counts
        ("10", True),
    ],
)
def test_an_invalid_age_from_the_origin_makes_the_response_stale(
    pair: Pair, upstream: RecordingUpstream, age: str, served: bool
) -> None:
    a, b = pair
    url = target("age", "max-age=3600", h=[f"Age:{age}"])
    get(a, url)

    again = get(b, url)

    assert (again.headers["x-cache"] == "HIT") is served
    assert upstream.hits["/cache/age"] == (1 if served else 2)


# -- 9. stale-if-error, stale-while-revalidate --------------------------------------------------


def wait_until_stale(gw: GatewayProcess, url: str) -> httpx.Response:
    """Ask until the answer is no longer a fresh HIT (HITs never reach the upstream)."""
    return poll(lambda: ((r := get(gw, url)).headers["x-cache"] != "HIT" and r) or None, 4, 0.1)


def test_stale_if_error_covers_an_erroring_origin(pair: Pair, upstream: RecordingUpstream) -> None:
    a, b = pair
    url = target("sie", "max-age=1, stale-if-error=60", fail_after="1")
    assert get(a, url).headers["x-cache"] == "MISS"

    covered = wait_until_stale(b, url)

    assert covered.status_code == 200 and covered.headers["x-cache"] == "STALE"
    assert covered.content == b"/cache/sie #1"
    assert "detail=stale-if-error" in members(covered) and "fwd-status=500" in members(covered)
    assert int(covered.headers["age"]) >= 1
    assert upstream.hits["/cache/sie"] == 2


def test_without_stale_if_error_the_origin_error_reaches_the_client(
    pair: Pair, upstream: RecordingUpstream
) -> None:
    a, b = pair
    url = target("nosie", "max-age=1, must-revalidate", h=['ETag:"n1"'], fail_after="1")
    get(a, url)

    failed = wait_until_stale(b, url)

    assert failed.status_code == 500 and failed.headers["x-cache"] == "EXPIRED"


def test_stale_while_revalidate_answers_at_once_and_refreshes_once(
    pair: Pair, upstream: RecordingUpstream
) -> None:
    a, b = pair
    url = target("swr", "max-age=1, stale-while-revalidate=30", delay="0.5")
    get(a, url)

    started = time.monotonic()
    stale = wait_until_stale(b, url)
    # wait_until_stale may ask a few fresh HITs first; the STALE answer itself never waited 0.5 s
    assert stale.elapsed.total_seconds() < 0.3, time.monotonic() - started
    assert stale.headers["x-cache"] == "STALE" and stale.content == b"/cache/swr #1"
    assert "detail=stale-while-revalidate" in members(stale)
    poll(lambda: upstream.hits["/cache/swr"] == 2 or None, timeout=3)
    refreshed = poll(lambda: ((r := get(a, url)).headers["x-cache"] == "HIT" and r) or None, 3)
    assert refreshed.content == b"/cache/swr #2"
    assert upstream.hits["/cache/swr"] == 2
