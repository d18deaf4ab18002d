"""CacheMiddleware: conditional requests, revalidation, request directives and the RFC 5861
stale windows (RFC 9111 §4.2-§4.3, §5.2.1)."""

from __future__ import annotations

import asyncio

import pytest

from gateway.errors import BadGateway, GatewayTimeout
from gateway.http.dates import format_http_date
from tests.cache.harness import START, Gateway, Reply, Seen, settle

pytestmark = pytest.mark.asyncio

VALIDATED = [
    (b"cache-control", b"max-age=10"),
    (b"etag", b'"v1"'),
    (b"last-modified", format_http_date(START - 100)),
]


def revalidating_origin(gw: Gateway, *, new_body: bytes = b"new") -> None:
    """An origin that answers 304 to its current ETag, else 200."""

    def script(seen: Seen) -> Reply:
        if seen.header(b"if-none-match") == b'"v1"':
            return Reply(
                status=304, headers=[(b"cache-control", b"max-age=20"), (b"etag", b'"v1"')], body=b""
            )
        return Reply(headers=VALIDATED, body=new_body)

    gw.upstream.script = script


async def test_conditional_requests_answered_304_from_a_fresh_entry() -> None:
    gw = Gateway()
    gw.upstream.reply = Reply(headers=VALIDATED)
    await gw.request()
    not_modified = await gw.request(headers=[(b"if-none-match", b'W/"v1"')])
    assert (not_modified.status, not_modified.body) == (304, b"")
    assert not_modified.header("etag") == '"v1"'
    assert not_modified.header("cache-control") == "max-age=10"
    assert not_modified.header("content-length") is None
    assert not_modified.x_cache == "HIT"
    since = await gw.request(headers=[(b"if-modified-since", format_http_date(START))])
    assert since.status == 304
    changed = await gw.request(
        headers=[(b"if-none-match", b'"v0"'), (b"if-modified-since", format_http_date(START))]
    )
    assert (changed.status, changed.body) == (200, b"hello")  # If-None-Match wins
    assert gw.upstream.calls == 1


async def test_stale_entry_is_revalidated_and_freshened_by_304() -> None:
    """§4.3.1, §4.3.4."""
    gw = Gateway()
    gw.upstream.reply = Reply(headers=[*VALIDATED, (b"x-version", b"1")])
    await gw.request()
    gw.clock.advance(15)
    gw.upstream.script = lambda seen: Reply(
        status=304, headers=[(b"cache-control", b"max-age=20"), (b"x-version", b"2")], body=b""
    )
    revalidated = await gw.request()
    seen = gw.upstream.seen[-1]
    assert seen.header(b"if-none-match") == b'"v1"'
    assert seen.header(b"if-modified-since") == format_http_date(START - 100)
    assert (revalidated.status, revalidated.body) == (200, b"hello")
    assert revalidated.x_cache == "EXPIRED"
    assert revalidated.header("x-version") == "2"
    assert revalidated.header("cache-control") == "max-age=20"
    assert revalidated.header("cache-status") == "gateway; fwd=stale; fwd-status=304; stored"
    assert revalidated.header("age") == "0"
    gw.clock.advance(19)
    assert (await gw.request()).x_cache == "HIT"  # fresh again for the new max-age
    assert gw.upstream.calls == 2


async def test_revalidation_answers_the_clients_own_condition() -> None:
    gw = Gateway()
    gw.upstream.reply = Reply(headers=VALIDATED)
    await gw.request()
    gw.clock.advance(15)
    revalidating_origin(gw)
    response = await gw.request(headers=[(b"if-none-match", b'"v1"')])
    assert (response.status, response.x_cache) == (304, "EXPIRED")


async def test_stale_entry_replaced_by_a_new_200() -> None:
    gw = Gateway()
    gw.upstream.reply = Reply(headers=VALIDATED)
    await gw.request()
    gw.clock.advance(15)
    gw.upstream.reply = Reply(headers=[(b"cache-control", b"max-age=10"), (b"etag", b'"v2"')], body=b"new")
    replaced = await gw.request()
    assert (replaced.body, replaced.x_cache) == (b"new", "EXPIRED")
    assert (await gw.request()).body == b"new"
    assert gw.upstream.calls == 2


async def test_304_for_another_representation_fetches_it_whole() -> None:
    gw = Gateway()
    gw.upstream.reply = Reply(headers=VALIDATED)
    await gw.request()
    gw.clock.advance(15)

    def script(seen: Seen) -> Reply:
        if seen.header(b"if-none-match"):
            return Reply(status=304, headers=[(b"etag", b'"v9"')], body=b"")
        return Reply(headers=[(b"cache-control", b"max-age=10"), (b"etag", b'"v9"')], body=b"v9")

    gw.upstream.script = script
    response = await gw.request()
    assert (response.status, response.body) == (200, b"v9")
    assert gw.upstream.seen[-1].header(b"if-none-match") is None


async def test_honoured_request_no_cache_max_age_zero_and_pragma_go_upstream() -> None:
    """§5.2.1.4, §5.2.1.1, RFC 7234 §5.4: on a route that honours client refreshes."""
    gw = Gateway(honor_client_no_cache=True)
    gw.upstream.reply = Reply(headers=VALIDATED)
    await gw.request()
    revalidating_origin(gw)
    for field in (
        (b"cache-control", b"no-cache"),
        (b"cache-control", b"max-age=0"),
        (b"pragma", b"no-cache"),
    ):
        gw.clock.advance(1)
        response = await gw.request(headers=[field])
        assert response.status == 200
        assert gw.upstream.seen[-1].header(b"if-none-match") == b'"v1"'
    assert gw.upstream.calls == 4
    gw.clock.advance(1)
    # Pragma is only read without Cache-Control (RFC 7234 §5.4)
    both = [(b"cache-control", b"max-stale"), (b"pragma", b"no-cache")]
    assert (await gw.request(headers=both)).x_cache == "HIT"
    assert gw.upstream.calls == 4


async def test_client_refresh_directives_are_ignored_by_default_like_varnish() -> None:
    """A fresh entry answers no-cache, max-age=0, min-fresh and Pragma requests from storage
    (the safe default: the upstream is not asked, the entry is not replaced)."""
    gw = Gateway()
    gw.upstream.reply = Reply(headers=VALIDATED)
    await gw.request()
    revalidating_origin(gw)
    for field in (
        (b"cache-control", b"no-cache"),
        (b"cache-control", b"max-age=0"),
        (b"cache-control", b"min-fresh=3600"),
        (b"pragma", b"no-cache"),
    ):
        gw.clock.advance(1)
        response = await gw.request(headers=[field])
        assert (response.status, response.x_cache, response.body) == (200, "HIT", b"hello")
    assert gw.upstream.calls == 1


async def test_response_no_cache_always_revalidates() -> None:
    """§5.2.2.4."""
    gw = Gateway()
    gw.upstream.reply = Reply(headers=[(b"cache-control", b"max-age=60, no-cache"), (b"etag", b'"v1"')])
    await gw.request()
    revalidating_origin(gw)
    assert (await gw.request()).x_cache == "EXPIRED"
    assert gw.upstream.calls == 2


async def test_max_stale_and_min_fresh() -> None:
    """§5.2.1.2, §5.2.1.3 (min-fresh only where the route honours client refreshes)."""
    gw = Gateway(honor_client_no_cache=True)
    gw.upstream.reply = Reply(headers=[(b"cache-control", b"max-age=60"), (b"etag", b'"1"')])
    await gw.request()
    gw.clock.advance(80)
    stale = await gw.request(headers=[(b"cache-control", b"max-stale=30")])
    assert stale.x_cache == "STALE"
    assert (await gw.request(headers=[(b"cache-control", b"max-stale=10")])).x_cache != "STALE"
    gw.clock.advance(50)
    assert (await gw.request(headers=[(b"cache-control", b"min-fresh=20")])).x_cache == "EXPIRED"
    assert gw.upstream.calls == 3


async def test_stale_while_revalidate_serves_stale_and_refreshes_once() -> None:
    """RFC 5861 §3."""
    gw = Gateway()
    gw.upstream.reply = Reply(
        headers=[(b"cache-control", b"max-age=10, stale-while-revalidate=60"), (b"etag", b'"v1"')]
    )
    await gw.request()
    gw.clock.advance(15)
    swr = (b"cache-control", b"max-age=10, stale-while-revalidate=60")
    gw.upstream.reply = Reply(headers=[swr], body=b"new", delay=0.01)
    first = await gw.request()
    second = await gw.request()
    assert (first.body, first.x_cache) == (b"hello", "STALE")
    assert (second.body, second.x_cache) == (b"hello", "STALE")
    assert first.header("cache-status") == ("gateway; hit; ttl=-5; detail=stale-while-revalidate")
    for _ in range(10):
        await settle()
        if gw.upstream.calls == 2:
            break
    await asyncio.sleep(0.05)
    assert gw.upstream.calls == 2  # one background refresh for both
    assert gw.upstream.seen[-1].header(b"if-none-match") == b'"v1"'
    refreshed = await gw.request()
    assert (refreshed.body, refreshed.x_cache) == (b"new", "HIT")


async def test_route_stale_while_revalidate() -> None:
    gw = Gateway(stale_while_revalidate=30)
    await gw.request()
    gw.clock.advance(70)
    assert (await gw.request()).x_cache == "STALE"
    gw.clock.advance(100)
    assert (await gw.request()).x_cache in ("MISS", "EXPIRED")


@pytest.mark.parametrize(
    "failure",
    [
        Reply(status=503, headers=[], body=b"down"),
        Reply(status=500, headers=[], body=b"err"),
        Reply(raises=BadGateway("refused")),
        Reply(raises=GatewayTimeout("slow")),
    ],
)
async def test_stale_if_error_covers_upstream_failures(failure: Reply) -> None:
    """RFC 5861 §4."""
    gw = Gateway()
    gw.upstream.reply = Reply(headers=[(b"cache-control", b"max-age=10, stale-if-error=60")])
    await gw.request()
    gw.clock.advance(30)
    gw.upstream.reply = failure
    response = await gw.request()
    assert (response.status, response.body, response.x_cache) == (200, b"hello", "STALE")
    assert "detail=stale-if-error" in (response.header("cache-status") or "")
    assert response.info.cache_status == "STALE"
    gw.clock.advance(60)
    if failure.raises is not None:
        with pytest.raises(type(failure.raises)):
            await gw.request()
    else:
        assert (await gw.request()).status == failure.status  # window over


async def test_route_stale_if_error_and_must_revalidate() -> None:
    gw = Gateway(stale_if_error=60)
    await gw.request()
    gw.clock.advance(70)
    gw.upstream.reply = Reply(status=502, headers=[], body=b"")
    assert (await gw.request()).x_cache == "STALE"
    strict = Gateway(stale_if_error=60)
    strict.upstream.reply = Reply(headers=[(b"cache-control", b"max-age=10, must-revalidate")])
    await strict.request()
    strict.clock.advance(20)
    strict.upstream.reply = Reply(status=503, headers=[], body=b"down")
    response = await strict.request()
    assert (response.status, response.body) == (503, b"down")  # §4.2.4: never stale


async def test_client_error_is_not_covered() -> None:
    gw = Gateway(stale_if_error=60)
    await gw.request()
    gw.clock.advance(70)
    gw.upstream.reply = Reply(status=404, headers=[], body=b"gone")
    assert (await gw.request()).status == 404


async def test_soft_purge_makes_entries_stale() -> None:
    gw = Gateway()
    gw.upstream.reply = Reply(headers=VALIDATED)
    await gw.request()
    gw.clock.advance(1)
    assert await gw.store.purge(url="/a", soft=True) == 1
    gw.clock.advance(1)
    revalidating_origin(gw)
    response = await gw.request()
    assert response.x_cache == "EXPIRED"
    assert gw.upstream.seen[-1].header(b"if-none-match") == b'"v1"'
    gw.clock.advance(1)
    assert (await gw.request()).x_cache == "HIT"


async def test_set_cookie_from_a_304_reaches_only_the_revalidating_client() -> None:
    gw = Gateway()
    gw.upstream.reply = Reply(headers=VALIDATED)
    await gw.request()
    gw.clock.advance(15)
    gw.upstream.reply = Reply(
        status=304, headers=[(b"cache-control", b"max-age=60"), (b"set-cookie", b"sid=alice")], body=b""
    )
    revalidated = await gw.request()
    assert revalidated.header("set-cookie") == "sid=alice"
    hit = await gw.request()
    assert (hit.x_cache, hit.header("set-cookie")) == ("HIT", None)
