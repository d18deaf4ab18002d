"""CacheMiddleware: storing, hits, what is never stored, bypasses (RFC 9111 §3, §4)."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.types import Message

from gateway.cache.store import Lookup
from gateway.errors import StoreUnavailable
from gateway.http.dates import format_http_date
from tests.cache.harness import START, Gateway, Reply

pytestmark = pytest.mark.asyncio


async def test_miss_then_hit_replays_date_and_computes_age() -> None:
    gw = Gateway()
    first = await gw.request()
    assert (first.status, first.body, first.x_cache) == (200, b"hello", "MISS")
    assert first.header("cache-status") == "gateway; fwd=uri-miss; fwd-status=200; stored"
    assert first.info.cache_status == "MISS"
    gw.clock.advance(7)
    second = await gw.request()
    assert (second.status, second.body, second.x_cache) == (200, b"hello", "HIT")
    assert gw.upstream.calls == 1
    assert second.header("age") == "7"
    assert second.header("date") == format_http_date(START).decode()
    assert second.header("cache-status") == "gateway; hit; ttl=53"
    assert second.header("content-length") == "5"
    assert second.info.cache_status == "HIT"


async def test_age_includes_upstream_age_and_apparent_age() -> None:
    """§4.2.3: Age from downstream caches and a Date in the past both count."""
    gw = Gateway()
    gw.upstream.reply = Reply(
        headers=[(b"cache-control", b"max-age=60"), (b"age", b"20"), (b"date", format_http_date(START - 5))]
    )
    await gw.request()
    hit = await gw.request()
    assert hit.header("age") == "20"
    gw.clock.advance(41)
    assert (await gw.request()).x_cache != "HIT"  # 20 + 41 > 60


async def test_head_is_served_from_the_get_entry() -> None:
    gw = Gateway()
    await gw.request()
    head = await gw.request("HEAD")
    assert (head.status, head.body, head.x_cache) == (200, b"", "HIT")
    assert head.header("content-length") == "5"
    assert gw.upstream.calls == 1


async def test_head_miss_is_not_stored() -> None:
    gw = Gateway()
    await gw.request("HEAD")
    assert (await gw.request()).x_cache == "MISS"
    assert gw.upstream.calls == 2


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ([(b"cache-control", b"no-store, max-age=60")], 200),
        ([(b"cache-control", b"private, max-age=60")], 200),
        ([(b"cache-control", b"max-age=60"), (b"set-cookie", b"sid=1")], 200),
        ([(b"cache-control", b"max-age=60"), (b"vary", b"*")], 200),
        ([(b"cache-control", b"max-age=60")], 206),
        ([(b"cache-control", b"max-age=60")], 429),
        ([(b"cache-control", b"max-age=60"), (b"content-type", b"application/problem+json")], 502),
        ([], 200),  # no freshness, no validators, GATEWAY_CACHE_TTL=0
    ],
)
async def test_never_stored(headers: list[tuple[bytes, bytes]], status: int) -> None:
    gw = Gateway()
    gw.upstream.reply = Reply(status=status, headers=headers)
    await gw.request()
    second = await gw.request()
    assert second.x_cache == "MISS"
    assert gw.upstream.calls == 2


async def test_configured_ttl_caches_responses_without_freshness() -> None:
    gw = Gateway(ttl=30)
    gw.upstream.reply = Reply(headers=[])
    await gw.request()
    assert (await gw.request()).x_cache == "HIT"
    gw.clock.advance(31)
    assert (await gw.request()).x_cache == "MISS"


async def test_force_ttl_overrides_origin() -> None:
    gw = Gateway(ttl=300, force_ttl=True)
    gw.upstream.reply = Reply(headers=[(b"cache-control", b"max-age=1")])
    await gw.request()
    gw.clock.advance(100)
    assert (await gw.request()).x_cache == "HIT"


async def test_authorization_is_never_served_a_shared_entry_unless_allowed() -> None:
    """§3.5."""
    gw = Gateway()
    await gw.request()  # anonymous, max-age=60
    authorized = await gw.request(headers=[(b"authorization", b"Bearer alice")])
    assert authorized.x_cache == "MISS"
    assert (await gw.request(headers=[(b"authorization", b"Bearer bob")])).x_cache == "MISS"
    gw.upstream.reply = Reply(headers=[(b"cache-control", b"public, max-age=60")])
    await gw.request("GET", "/b", [(b"authorization", b"Bearer alice")])
    hit = await gw.request("GET", "/b", [(b"authorization", b"Bearer bob")])
    assert hit.x_cache == "HIT"


async def test_cookies_bypass_unless_allowed() -> None:
    gw = Gateway()
    cookie = [(b"cookie", b"sid=1")]
    bypass = await gw.request(headers=cookie)
    assert bypass.x_cache == "BYPASS"
    assert bypass.header("cache-status") == "gateway; fwd=bypass; detail=cookie"
    assert (await gw.request(headers=cookie)).x_cache == "BYPASS"
    allowed = Gateway(allow_cookies=True)
    await allowed.request(headers=cookie)
    assert (await allowed.request(headers=cookie)).x_cache == "HIT"


@pytest.mark.parametrize("name", [b"range", b"if-match", b"if-unmodified-since", b"if-range"])
async def test_ranges_and_other_preconditions_bypass(name: bytes) -> None:
    gw = Gateway()
    await gw.request()
    response = await gw.request(headers=[(name, b"bytes=0-1")])
    assert response.x_cache == "BYPASS"
    assert gw.upstream.seen[-1].header(name) == b"bytes=0-1"


async def test_vary_selects_variants() -> None:
    """§4.1."""
    gw = Gateway()
    gw.upstream.script = lambda seen: Reply(
        headers=[(b"cache-control", b"max-age=60"), (b"vary", b"Accept")],
        body=seen.header(b"accept") or b"none",
    )
    json, html = [(b"accept", b"application/json")], [(b"accept", b"text/html")]
    assert (await gw.request(headers=json)).body == b"application/json"
    assert (await gw.request(headers=html)).body == b"text/html"
    hit_json = await gw.request(headers=json)
    hit_html = await gw.request(headers=html)
    assert (hit_json.body, hit_json.x_cache) == (b"application/json", "HIT")
    assert (hit_html.body, hit_html.x_cache) == (b"text/html", "HIT")
    assert (await gw.request()).body == b"none"  # absent header: its own variant
    assert gw.upstream.calls == 3


async def test_vary_learned_by_another_process() -> None:
    """A second gateway sharing the store learns the Vary from the lookup, not its memory."""
    first = Gateway()
    first.upstream.reply = Reply(headers=[(b"cache-control", b"max-age=60"), (b"vary", b"accept")])
    await first.request(headers=[(b"accept", b"a")])
    second = Gateway(first.store)
    second.clock = first.clock
    second.app.clock = first.clock
    assert (await second.request(headers=[(b"accept", b"a")])).x_cache == "HIT"
    assert (await second.request(headers=[(b"accept", b"b")])).x_cache == "MISS"


async def test_ignored_query_params_share_an_entry_and_are_not_forwarded() -> None:
    gw = Gateway(ignore_query_params=frozenset({"utm_source"}))
    await gw.request("GET", "/a?x=1&utm_source=mail")
    hit = await gw.request("GET", "/a?utm_source=web&x=1")
    assert gw.upstream.seen[0].query == b"x=1"
    assert hit.x_cache == "HIT"
    assert (await gw.request("GET", "/a?x=2&utm_source=ad")).x_cache == "MISS"
    assert gw.upstream.seen[1].query == b"x=2"


async def test_large_bodies_stream_whole_and_are_not_stored() -> None:
    gw = Gateway(max_object_bytes=10)
    gw.upstream.reply = Reply(
        body=b"x" * 25,
        chunks=5,
        headers=[
            (b"cache-control", b"max-age=60"),
            (b"transfer-encoding", b"chunked"),
            (b"content-length", b"25"),
        ],
    )
    first = await gw.request()
    assert first.body == b"x" * 25
    assert (await gw.request()).x_cache == "MISS"


async def test_store_write_completes_before_the_last_byte() -> None:
    """Read-your-writes: when the client has the whole answer, every process finds it."""
    gw = Gateway()
    gw.upstream.reply = Reply(body=b"abcdef", chunks=3)
    found_at_last_chunk: list[bool] = []

    async def on_message(message: Message) -> None:
        if message["type"] == "http.response.body" and not message.get("more_body"):
            lookup = await gw.store.lookup("/a|http|example.com|api", "")
            found_at_last_chunk.append(lookup.blob is not None)

    gw.on_message = on_message
    assert (await gw.request()).body == b"abcdef"
    assert found_at_last_chunk == [True]


async def test_corrupt_entries_are_misses() -> None:
    gw = Gateway()
    await gw.store.put("/a|http|example.com|api", "", "", b"GWC\x01junk", 60, ())
    response = await gw.request()
    assert (response.status, response.x_cache) == (200, "MISS")
    assert (await gw.request()).x_cache == "HIT"


class BrokenStore:
    """Every call fails the way the Redis store does when Redis is down."""

    def lookup(self, key: str, variant: str) -> Any:
        raise StoreUnavailable("down")

    async def _fail(self, *args: Any, **kwargs: Any) -> Any:
        raise StoreUnavailable("down")

    put = invalidate = try_lock = unlock = purge = _fail


async def test_store_unavailable_bypasses_to_the_upstream() -> None:
    gw = Gateway(BrokenStore())
    for method in ("GET", "POST"):
        response = await gw.request(method, prefetch=True)
        assert (response.status, response.body) == (200, b"hello")
    assert response.x_cache is None  # POST: not a cacheable request
    get = await gw.request()
    assert get.x_cache == "BYPASS"
    assert get.header("cache-status") == "gateway; fwd=bypass; detail=store-unavailable"


class FailingPut(BrokenStore):
    def __init__(self) -> None:
        from gateway.cache.memory_store import MemoryCacheStore

        self.inner = MemoryCacheStore()

    def lookup(self, key: str, variant: str) -> Any:
        return self.inner.lookup(key, variant)

    async def try_lock(self, key: str, ttl: float) -> str | None:  # type: ignore[override,unused-ignore]
        # (mypy at its floor reads BrokenStore's shared `_fail` as this method's signature)
        return await self.inner.try_lock(key, ttl)


async def test_failed_store_writes_still_answer() -> None:
    gw = Gateway(FailingPut())
    response = await gw.request()
    assert (response.status, response.body, response.x_cache) == (200, b"hello", "MISS")


class CountingStore:
    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.lookups = 0

    def lookup(self, key: str, variant: str) -> Any:
        self.lookups += 1
        return self.inner.lookup(key, variant)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_prefetched_lookup_is_used() -> None:
    gw = Gateway()
    await gw.request()
    counting = CountingStore(gw.store)
    gw.runtime.cache_store = counting
    hit = await gw.request(prefetch=True)
    assert hit.x_cache == "HIT"
    assert counting.lookups == 1


async def test_only_if_cached_miss_is_504() -> None:
    """§5.2.1.7."""
    gw = Gateway()
    response = await gw.request(headers=[(b"cache-control", b"only-if-cached")])
    assert response.status == 504
    assert gw.upstream.calls == 0
    await gw.request()
    hit = await gw.request(headers=[(b"cache-control", b"only-if-cached")])
    assert (hit.status, hit.x_cache) == (200, "HIT")


async def test_disabled_route_and_admin_paths_pass_through() -> None:
    gw = Gateway(enabled=False)
    await gw.request()
    response = await gw.request()
    assert response.x_cache is None
    assert gw.upstream.calls == 2
    scope = gw.scope()
    scope["gateway"].route = None
    assert (await gw.run(scope)).x_cache is None


async def test_lookup_result_type_is_the_store_protocol() -> None:
    gw = Gateway()
    assert isinstance(await gw.store.lookup("x", ""), Lookup)


async def test_gateway_errors_on_a_miss_carry_the_cache_headers() -> None:
    """The context layer renders the proxy's 502/504; the cache's headers ride along."""
    from gateway.errors import BadGateway

    gw = Gateway()
    gw.upstream.reply = Reply(raises=BadGateway("refused"))
    scope = gw.scope()
    with pytest.raises(BadGateway):
        await gw.run(scope)
    extra = dict(scope["gateway"].extra_response_headers)
    assert extra[b"x-cache"] == b"MISS"
    assert extra[b"cache-status"] == b"gateway; fwd=uri-miss; fwd-status=502"
    gw.upstream.reply = Reply()
    assert (await gw.request()).x_cache == "MISS"  # nothing was stored


async def test_vary_miss_is_reported() -> None:
    gw = Gateway()
    gw.upstream.reply = Reply(headers=[(b"cache-control", b"max-age=60"), (b"vary", b"accept")])
    await gw.request(headers=[(b"accept", b"a")])
    response = await gw.request(headers=[(b"accept", b"b")])
    assert response.header("cache-status") == "gateway; fwd=vary-miss; fwd-status=200; stored"


async def test_fields_named_by_qualified_no_cache_private_or_connection_are_not_stored() -> None:
    gw = Gateway()
    gw.upstream.reply = Reply(
        headers=[
            (b"cache-control", b'max-age=60, no-cache="a", private="b"'),
            (b"a", b"1"),
            (b"b", b"2"),
            (b"c", b"3"),
            (b"connection", b"d"),
            (b"d", b"4"),
        ]
    )
    first = await gw.request()
    assert first.header("a") == "1"  # the origin's answer itself is relayed as sent
    hit = await gw.request()
    assert hit.x_cache == "HIT"
    assert (hit.header("a"), hit.header("b"), hit.header("c")) == (None, None, "3")
    assert (hit.header("connection"), hit.header("d")) == (None, None)
