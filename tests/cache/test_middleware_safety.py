"""CacheMiddleware against poisoning and hostage-taking, driven directly (fake clock, stand-in
upstream): error answers are not stored, a slow leader does not hold its followers, and the
memory held for teeing misses stays within the worker's budget."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from starlette.types import Message

from tests.cache.harness import Gateway, Reply, Seen

pytestmark = pytest.mark.asyncio


def status_of(response: Any) -> str:
    return str(response.header("cache-status") or "")


async def test_a_503_with_max_age_is_not_stored_so_the_next_request_goes_upstream() -> None:
    gw = Gateway()
    gw.upstream.reply = Reply(status=503, headers=[(b"cache-control", b"max-age=60")], body=b"x")
    first = await gw.request()
    second = await gw.request()
    assert (first.status, second.status) == (503, 503)
    assert second.x_cache == "MISS" and "stored" not in status_of(second)
    assert gw.upstream.calls == 2


async def test_a_404_with_max_age_is_still_stored() -> None:
    gw = Gateway()
    gw.upstream.reply = Reply(status=404, headers=[(b"cache-control", b"max-age=60")], body=b"no")
    await gw.request()
    hit = await gw.request()
    assert (hit.status, hit.x_cache, hit.body) == (404, "HIT", b"no")
    assert gw.upstream.calls == 1


async def test_the_default_ttl_does_not_store_an_error_without_freshness() -> None:
    gw = Gateway(ttl=300)
    gw.upstream.reply = Reply(status=404, headers=[], body=b"no")
    await gw.request()
    assert (await gw.request()).x_cache == "MISS"
    gw.upstream.reply = Reply(status=200, headers=[], body=b"ok")
    await gw.request(target="/b")
    assert (await gw.request(target="/b")).x_cache == "HIT"  # the TTL still serves 200s


async def test_a_route_that_lists_503_stores_it_with_its_own_freshness_only() -> None:
    gw = Gateway(cache_errors=frozenset({503}))
    gw.upstream.reply = Reply(status=503, headers=[(b"cache-control", b"max-age=60")], body=b"x")
    await gw.request()
    assert (await gw.request()).x_cache == "HIT"
    gw.upstream.reply = Reply(status=500, headers=[(b"cache-control", b"max-age=60")], body=b"x")
    await gw.request(target="/five-hundred")
    assert (await gw.request(target="/five-hundred")).x_cache == "MISS"


async def test_an_uncovered_error_during_revalidation_does_not_replace_the_stale_entry() -> None:
    gw = Gateway()
    gw.upstream.reply = Reply(headers=[(b"cache-control", b"max-age=10"), (b"etag", b'"v1"')])
    await gw.request()
    gw.clock.advance(20)
    gw.upstream.reply = Reply(status=503, headers=[(b"cache-control", b"max-age=600")], body=b"!")
    assert (await gw.request()).status == 503

    def origin(seen: Seen) -> Reply:
        if seen.header(b"if-none-match") == b'"v1"':
            return Reply(
                status=304, headers=[(b"cache-control", b"max-age=10"), (b"etag", b'"v1"')], body=b""
            )
        return Reply(body=b"unexpected")

    gw.upstream.script = origin
    response = await gw.request()  # still the good entry, revalidated
    assert (response.status, response.body, response.x_cache) == (200, b"hello", "EXPIRED")


async def test_a_leader_whose_client_never_reads_does_not_hold_its_followers() -> None:
    gw = Gateway(lock_timeout=30.0)
    body = b"b" * 200_000
    gw.upstream.reply = Reply(body=body, chunks=20, delay=0.05)
    stalled = asyncio.Event()

    async def never_reads(message: Message) -> None:
        if message["type"] == "http.response.body":
            stalled.set()
            await asyncio.Event().wait()  # the client's socket buffer is full, forever

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    leader = asyncio.create_task(gw.app(gw.scope(), receive, never_reads))
    await asyncio.sleep(0.01)  # the leader holds the lock and waits on the upstream
    started = time.monotonic()
    followers = await asyncio.wait_for(asyncio.gather(*(gw.request() for _ in range(5))), 10)
    assert time.monotonic() - started < 5.0  # generous; the lock timeout is 30 s
    assert {r.body for r in followers} == {body}
    assert gw.upstream.calls == 1
    assert stalled.is_set() and not leader.done()
    leader.cancel()
    await asyncio.gather(leader, return_exceptions=True)
    assert gw.app.tee.used == 0  # the cancelled exchange gave its budget back


async def test_the_leaders_client_hears_the_end_only_after_the_entry_is_stored() -> None:
    gw = Gateway()
    gw.upstream.reply = Reply(body=b"abcdef" * 1000, chunks=6)
    seen_stored: list[bool] = []

    async def on_message(message: Message) -> None:
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            seen_stored.append((await gw.store.lookup(*KEY)).blob is not None)

    gw.on_message = on_message
    response = await gw.request()
    assert response.body == b"abcdef" * 1000
    assert seen_stored == [True]


KEY = ("/a|http|example.com|api", "")


async def test_a_known_length_beyond_the_tee_budget_streams_without_storing() -> None:
    gw = Gateway(tee_bytes=1000)
    gw.upstream.reply = Reply(body=b"z" * 5000, chunks=5)
    first = await gw.request()
    assert first.body == b"z" * 5000
    assert "detail=tee-budget" in status_of(first) and "stored" not in status_of(first)
    assert (await gw.request()).x_cache == "MISS"
    assert gw.app.tee.used == 0


async def test_an_unknown_length_that_outgrows_the_tee_budget_is_relayed_whole() -> None:
    gw = Gateway(tee_bytes=1000)
    gw.upstream.reply = Reply(body=b"y" * 5000, chunks=10, length=False)
    first = await gw.request()
    assert first.body == b"y" * 5000
    assert (await gw.request()).x_cache == "MISS"
    assert gw.app.tee.used == 0
    gw.upstream.reply = Reply(body=b"s" * 500, chunks=5, length=False)
    await gw.request(target="/small")
    assert (await gw.request(target="/small")).x_cache == "HIT"
    assert gw.app.tee.used == 0


async def test_misses_beyond_the_budget_stream_while_others_hold_it() -> None:
    gw = Gateway(tee_bytes=3000, lock_timeout=0)
    gw.upstream.reply = Reply(body=b"q" * 2000, chunks=4)
    release = asyncio.Event()

    async def slow_client(message: Message) -> None:
        if message["type"] == "http.response.body":
            await release.wait()

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    holder = asyncio.create_task(gw.app(gw.scope(target="/held"), receive, slow_client))
    for _ in range(50):
        await asyncio.sleep(0)
    assert gw.app.tee.used == 2000  # the held miss is stored; its client still being fed
    other = await gw.request(target="/other")
    assert "detail=tee-budget" in status_of(other) and other.body == b"q" * 2000
    release.set()
    await holder
    assert gw.app.tee.used == 0
    assert (await gw.request(target="/held")).x_cache == "HIT"
