"""CacheMiddleware: concurrent misses collapse onto one upstream request; followers never wait
longer than the lock timeout."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from gateway.cache.store import MISS, Ready
from tests.cache.harness import Gateway, Reply

pytestmark = pytest.mark.asyncio


async def test_concurrent_misses_cause_one_upstream_request() -> None:
    gw = Gateway()
    gw.upstream.reply = Reply(body=b"once", delay=0.05)
    responses = await asyncio.gather(*(gw.request() for _ in range(10)))
    assert gw.upstream.calls == 1
    assert {r.body for r in responses} == {b"once"}
    assert sorted(r.x_cache or "" for r in responses) == ["HIT"] * 9 + ["MISS"]
    follower = next(r for r in responses if r.x_cache == "HIT")
    assert follower.header("cache-status") == "gateway; hit; ttl=60; detail=collapsed"


async def test_collapsing_across_processes_sharing_a_store() -> None:
    one = Gateway()
    two = Gateway(one.store)
    two.upstream = one.upstream
    two.app.app = one.upstream
    one.upstream.reply = Reply(body=b"shared", delay=0.05)
    responses = await asyncio.gather(*(gw.request() for gw in (one, two, one, two, one, two)))
    assert one.upstream.calls == 1
    assert {r.body for r in responses} == {b"shared"}


async def test_uncacheable_answer_releases_followers_at_once() -> None:
    gw = Gateway(lock_timeout=5.0)
    gw.upstream.reply = Reply(headers=[(b"cache-control", b"no-store")], delay=0.05)
    started = time.monotonic()
    responses = await asyncio.gather(*(gw.request() for _ in range(5)))
    assert time.monotonic() - started < 2.0  # generous: not the 5 s lock timeout
    assert all(r.status == 200 for r in responses)
    assert gw.upstream.calls == 5


async def test_stuck_leader_does_not_hang_followers() -> None:
    gw = Gateway(lock_timeout=0.2)
    # Another process took the lock and died; the lock outlives our wait.
    await gw.store.try_lock("/a|http|example.com|api", 60)
    started = time.monotonic()
    response = await gw.request()
    elapsed = time.monotonic() - started
    assert response.status == 200
    assert gw.upstream.calls == 1
    assert 0.15 < elapsed < 2.0


async def test_collapsing_can_be_disabled_and_skips_honoured_no_cache_requests() -> None:
    gw = Gateway(lock_timeout=0)
    gw.upstream.reply = Reply(delay=0.02)
    await asyncio.gather(*(gw.request() for _ in range(3)))
    assert gw.upstream.calls == 3
    no_cache = [(b"cache-control", b"no-cache")]
    honouring = Gateway(honor_client_no_cache=True)
    honouring.upstream.reply = Reply(delay=0.02)
    await asyncio.gather(*(honouring.request(headers=no_cache) for _ in range(3)))
    assert honouring.upstream.calls == 3


async def test_ignored_client_no_cache_requests_collapse_like_any_other() -> None:
    """By default a client's no-cache is ignored (as Varnish): 10 of them are one miss."""
    gw = Gateway()
    gw.upstream.reply = Reply(body=b"once", delay=0.05)
    no_cache = [(b"cache-control", b"no-cache"), (b"pragma", b"no-cache")]
    responses = await asyncio.gather(*(gw.request(headers=no_cache) for _ in range(10)))
    assert gw.upstream.calls == 1
    assert {r.body for r in responses} == {b"once"}


class LateView:
    """A store whose first lookup misses an entry another process stored a moment ago."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.first = True

    def lookup(self, key: str, variant: str) -> Any:
        if self.first:
            self.first = False
            return Ready(MISS)
        return self.inner.lookup(key, variant)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_new_leader_looks_again_before_going_upstream() -> None:
    """The previous leader may store and unlock between our lookup and our lock."""
    one = Gateway()
    await one.request()
    two = Gateway(LateView(one.store))
    response = await two.request()
    assert (response.x_cache, response.body) == ("HIT", b"hello")
    assert two.upstream.calls == 0
