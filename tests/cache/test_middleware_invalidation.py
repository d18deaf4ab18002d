"""CacheMiddleware: unsafe methods invalidate (RFC 9111 §4.4)."""

from __future__ import annotations

import pytest
from starlette.types import Message

from gateway.config import CacheSettings, Route
from tests.cache.harness import Gateway, Reply, Seen

pytestmark = pytest.mark.asyncio


async def cached(gw: Gateway, target: str) -> None:
    await gw.request("GET", target)
    assert (await gw.request("GET", target)).x_cache == "HIT"


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "UNKNOWN"])
async def test_unsafe_success_invalidates_the_target(method: str) -> None:
    gw = Gateway()
    await cached(gw, "/a")
    await gw.request(method, "/a")
    assert (await gw.request("GET", "/a")).x_cache == "MISS"


@pytest.mark.parametrize("status", [400, 404, 500, 503])
async def test_error_answers_do_not_invalidate(status: int) -> None:
    gw = Gateway()
    await cached(gw, "/a")
    gw.upstream.script = lambda seen: Reply(status=status) if seen.method == "POST" else Reply()
    await gw.request("POST", "/a")
    assert (await gw.request("GET", "/a")).x_cache == "HIT"


async def test_safe_methods_do_not_invalidate() -> None:
    gw = Gateway()
    await cached(gw, "/a")
    await gw.request("OPTIONS", "/a")
    assert (await gw.request("GET", "/a")).x_cache == "HIT"


async def test_all_variants_and_query_targets() -> None:
    gw = Gateway()
    gw.upstream.reply = Reply(headers=[(b"cache-control", b"max-age=60"), (b"vary", b"accept")])
    await gw.request("GET", "/a", [(b"accept", b"x")])
    await gw.request("GET", "/a", [(b"accept", b"y")])
    await cached(gw, "/a?q=1")
    await gw.request("POST", "/a")
    assert (await gw.request("GET", "/a", [(b"accept", b"x")])).x_cache == "MISS"
    assert (await gw.request("GET", "/a", [(b"accept", b"y")])).x_cache == "MISS"
    assert (await gw.request("GET", "/a?q=1")).x_cache == "HIT"  # another URI


async def test_same_origin_location_and_content_location_are_invalidated() -> None:
    gw = Gateway()
    for target in ("/items", "/items/1", "/items/2", "/elsewhere"):
        await cached(gw, target)

    def script(seen: Seen) -> Reply:
        if seen.method == "POST":
            return Reply(
                status=201,
                headers=[
                    (b"location", b"/items/1"),
                    (b"content-location", b"http://example.com/items/2"),
                ],
            )
        return Reply()

    gw.upstream.script = script
    await gw.request("POST", "/items")
    for target in ("/items", "/items/1", "/items/2"):
        assert (await gw.request("GET", target)).x_cache == "MISS", target
    assert (await gw.request("GET", "/elsewhere")).x_cache == "HIT"


async def test_other_origin_location_is_not_invalidated() -> None:
    gw = Gateway()
    await cached(gw, "/b")
    gw.upstream.script = lambda seen: (
        Reply(status=303, headers=[(b"location", b"http://evil.test/b")])
        if seen.method == "POST"
        else Reply()
    )
    await gw.request("POST", "/a")
    assert (await gw.request("GET", "/b")).x_cache == "HIT"
    assert (await gw.request("GET", "/b", host="evil.test")).x_cache == "MISS"


async def test_location_on_another_route_uses_that_routes_key() -> None:
    other = Route("other", "/other", ("http://o.test",), cache=CacheSettings())
    gw = Gateway(routes=[other])
    await cached(gw, "/other/x")
    gw.upstream.script = lambda seen: (
        Reply(status=200, headers=[(b"content-location", b"/other/x")]) if seen.method == "PUT" else Reply()
    )
    await gw.request("PUT", "/a")
    assert (await gw.request("GET", "/other/x")).x_cache == "MISS"


async def test_invalidation_happens_before_the_client_hears_the_answer() -> None:
    gw = Gateway()
    await cached(gw, "/a")
    seen_blob: list[bool] = []

    async def on_message(message: Message) -> None:
        if message["type"] == "http.response.start":
            lookup = await gw.store.lookup("/a|http|example.com|api", "")
            seen_blob.append(lookup.blob is not None)

    gw.on_message = on_message
    await gw.request("DELETE", "/a")
    assert seen_blob == [False]
