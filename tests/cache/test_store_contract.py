"""One contract for every cache store: memory, and Redis on a real server and a real Cluster."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass

import pytest
import redis
from redis.asyncio import Redis, RedisCluster

from gateway.autopipeline import AutoPipeline
from gateway.breaker import CircuitBreaker
from gateway.cache.memory_store import MemoryCacheStore
from gateway.cache.redis_store import RedisCacheStore, entry_name, lock_name, tag_name
from gateway.cache.store import CacheStore, Lookup
from gateway.config import RedisSettings, Secret
from gateway.errors import StoreUnavailable
from gateway.redis_client import create_redis
from tests.support.redis_server import RedisServer, free_port

KEY = "/items?page=1|http|shop.test:8080|shop"
OTHER_HOST = "/items?page=1|https|api.test|shop"
LONG_PATH = "/search?q=" + "x" * 250


@dataclass
class Harness:
    store: CacheStore
    advance: Callable[[float], Awaitable[None]]
    raw: Redis | RedisCluster | None  # the Redis store's server, for checking its keys directly
    now: Callable[[], float]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now

    async def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def memory_cache() -> Harness:
    clock = FakeClock()
    return Harness(MemoryCacheStore(clock=clock), clock.advance, None, clock)


@pytest.fixture
async def redis_cache(redis_url: str) -> AsyncIterator[Harness]:
    client = create_redis(RedisSettings(url=Secret(redis_url)))
    pipeline = AutoPipeline(client, timeout=2.0)
    yield Harness(RedisCacheStore(client, pipeline), asyncio.sleep, client, time.time)
    await pipeline.aclose()
    await client.aclose()


def cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free and valid too."""
    while True:
        port = free_port()
        if port + 10000 < 65536:
            with socket.socket() as bus, contextlib.suppress(OSError):
                bus.bind(("127.0.0.1", port + 10000))
                return port


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[list[int]]:
    """Three primaries sharing the 16384 slots: the same store code must work on Cluster."""
    servers: list[RedisServer] = []
    try:
        for _ in range(3):
            servers.append(RedisServer("--cluster-enabled", "yes", port=cluster_port()))
            servers[-1].start()
        nodes = [redis.Redis(host=s.host, port=s.port) for s in servers]
        for i, node in enumerate(nodes):
            node.cluster("ADDSLOTSRANGE", i * 5462, min(i * 5462 + 5461, 16383))
            node.cluster("SET-CONFIG-EPOCH", i + 1)
        for server in servers[1:]:
            nodes[0].cluster("MEET", server.host, server.port)
        deadline = time.monotonic() + 20
        while not all(n.cluster("INFO")["cluster_state"] == "ok" for n in nodes):
            assert time.monotonic() < deadline, "the test cluster did not form"
            time.sleep(0.05)
        for node in nodes:
            node.close()
        yield [s.port for s in servers]
    finally:
        for server in servers:
            server.close()


@pytest.fixture
async def cluster_cache(redis_cluster: list[int]) -> AsyncIterator[Harness]:
    client = RedisCluster(host="127.0.0.1", port=redis_cluster[0], protocol=2)
    await client.flushall(target_nodes=RedisCluster.PRIMARIES)
    pipeline = AutoPipeline(client, timeout=2.0)
    yield Harness(RedisCacheStore(client, pipeline), asyncio.sleep, client, time.time)
    await pipeline.aclose()
    await client.aclose()


# getfixturevalue hides the cluster from tier inference (tests/tiers.py): marked here.
CLUSTER = pytest.param("cluster", marks=pytest.mark.topology)


@pytest.fixture(params=["memory", "redis", CLUSTER])
def cache(request: pytest.FixtureRequest) -> Harness:
    harness: Harness = request.getfixturevalue(f"{request.param}_cache")
    return harness


async def put(
    cache: Harness,
    key: str = KEY,
    variant: str = "",
    blob: bytes = b"entry",
    *,
    vary: str = "",
    ttl: float = 60,
    tags: tuple[str, ...] = (),
) -> None:
    await cache.store.put(key, variant, vary, blob, ttl, tags)


async def blob(cache: Harness, key: str = KEY, variant: str = "") -> bytes | None:
    return (await cache.store.lookup(key, variant)).blob


async def test_lookup_of_an_unknown_key_finds_nothing(cache: Harness) -> None:
    assert await cache.store.lookup(KEY, "") == Lookup(None, None, None)


async def test_put_then_lookup_returns_the_variant_and_the_vary_list(cache: Harness) -> None:
    await put(cache, variant="gzip", blob=b"zipped", vary="accept-encoding")
    await put(cache, variant="br", blob=b"brotli", vary="accept-encoding")

    assert await cache.store.lookup(KEY, "gzip") == Lookup("accept-encoding", b"zipped", None)
    assert await cache.store.lookup(KEY, "br") == Lookup("accept-encoding", b"brotli", None)
    assert await cache.store.lookup(KEY, "identity") == Lookup("accept-encoding", None, None)
    assert await cache.store.lookup(OTHER_HOST, "gzip") == Lookup(None, None, None)


async def test_a_new_vary_list_replaces_the_old_variants(cache: Harness) -> None:
    await put(cache, variant="gzip", blob=b"zipped", vary="accept-encoding")
    await put(cache, variant="en|gzip", blob=b"english", vary="accept-language,accept-encoding")

    assert await blob(cache, variant="gzip") is None
    found = await cache.store.lookup(KEY, "en|gzip")
    assert found == Lookup("accept-language,accept-encoding", b"english", None)


async def test_entries_expire_after_their_ttl(cache: Harness) -> None:
    await put(cache, ttl=0.2)
    await put(cache, key=OTHER_HOST, ttl=60)
    await cache.advance(0.5)

    assert await cache.store.lookup(KEY, "") == Lookup(None, None, None)
    assert await blob(cache, OTHER_HOST) == b"entry"


async def test_a_shorter_ttl_never_shortens_the_entry(cache: Harness) -> None:
    await put(cache, variant="a", ttl=60)
    await put(cache, variant="b", ttl=0.2)
    await cache.advance(0.5)

    assert await blob(cache, variant="a") == b"entry"
    assert await blob(cache, variant="b") == b"entry"


async def test_a_zero_ttl_stores_nothing(cache: Harness) -> None:
    await put(cache, ttl=0)
    assert await blob(cache) is None


async def test_invalidate_removes_every_variant_of_that_key_only(cache: Harness) -> None:
    await put(cache, variant="a", vary="accept")
    await put(cache, variant="b", vary="accept")
    await put(cache, key=OTHER_HOST)

    await cache.store.invalidate(KEY)
    await cache.store.invalidate("/never-stored|http|x|r")

    assert await cache.store.lookup(KEY, "a") == Lookup(None, None, None)
    assert await blob(cache, OTHER_HOST) == b"entry"


async def test_the_lock_is_exclusive_and_released_only_by_its_token(cache: Harness) -> None:
    token = await cache.store.try_lock(KEY, 5)
    assert token
    assert await cache.store.try_lock(KEY, 5) is None
    assert await cache.store.try_lock(OTHER_HOST, 5)  # other keys have their own lock

    await cache.store.unlock(KEY, "not-the-token")
    assert await cache.store.try_lock(KEY, 5) is None

    await cache.store.unlock(KEY, token)
    assert await cache.store.try_lock(KEY, 5)


async def test_an_expired_lock_can_be_taken_and_its_old_owner_cannot_free_it(
    cache: Harness,
) -> None:
    stale = await cache.store.try_lock(KEY, 0.2)
    assert stale
    await cache.advance(0.5)
    fresh = await cache.store.try_lock(KEY, 5)
    assert fresh and fresh != stale

    await cache.store.unlock(KEY, stale)
    assert await cache.store.try_lock(KEY, 5) is None


async def test_purge_by_url_matches_every_host_and_nothing_else(cache: Harness) -> None:
    same_url = [KEY, OTHER_HOST, "/items?page=1|http|shop.test:8080|legacy"]
    others = [
        "/items?page=12|http|shop.test:8080|shop",
        "/items|http|shop.test:8080|shop",
        "/items?page=1/x|http|shop.test:8080|shop",
    ]
    for key in same_url + others:
        await put(cache, key=key)

    assert await cache.store.purge(url="/items?page=1") == 3

    assert [await blob(cache, key) for key in same_url] == [None, None, None]
    assert [await blob(cache, key) for key in others] == [b"entry"] * 3
    assert await cache.store.purge(url="/items?page=1") == 0


async def test_purge_treats_glob_characters_literally(cache: Harness) -> None:
    await put(cache, key="/f[1]?q=*|http|h|r")
    await put(cache, key="/f1?q=abc|http|h|r")
    await put(cache, key="/f\\x|http|h|r")

    assert await cache.store.purge(url="/f[1]?q=*") == 1
    assert await cache.store.purge(prefix="/f?") == 0
    assert await cache.store.purge(prefix="/f\\") == 1
    assert await blob(cache, "/f1?q=abc|http|h|r") == b"entry"


async def test_purge_by_prefix(cache: Harness) -> None:
    inside = ["/api/a|http|h|r", "/api/b?x=1|http|h2|r", "/api/|http|h|r"]
    outside = ["/apix|http|h|r", "/other/api/|http|h|r", "/|http|h|r"]
    for key in inside + outside:
        await put(cache, key=key, variant="v", vary="accept")

    assert await cache.store.purge(prefix="/api/") == 3

    assert [await blob(cache, key, "v") for key in inside] == [None] * 3
    assert [await blob(cache, key, "v") for key in outside] == [b"entry"] * 3


async def test_purge_by_tag(cache: Harness) -> None:
    await put(cache, key="/a|http|h|r", tags=("product", "p-1"))
    await put(cache, key="/b|http|h|r", tags=("product",))
    await put(cache, key="/c|http|h|r", tags=("p-2",))

    assert await cache.store.purge(tag="product") == 2
    assert await cache.store.purge(tag="product") == 0
    assert await cache.store.purge(tag="unknown") == 0

    assert await blob(cache, "/a|http|h|r") is None
    assert await blob(cache, "/b|http|h|r") is None
    assert await blob(cache, "/c|http|h|r") == b"entry"


async def test_soft_purge_marks_entries_stale_and_keeps_them(cache: Harness) -> None:
    await put(cache, variant="a", vary="accept", tags=("t",))
    await put(cache, key="/other|http|h|r")
    before = cache.now()

    assert await cache.store.purge(url="/items?page=1", soft=True) == 1

    after = cache.now()
    found = await cache.store.lookup(KEY, "a")
    assert found.blob == b"entry" and found.vary == "accept"
    assert found.purged_at is not None
    assert before - 5 <= found.purged_at <= after + 5  # Redis TIME vs this machine's clock
    assert (await cache.store.lookup("/other|http|h|r", "")).purged_at is None

    # a variant stored after the purge is still under the same mark; its own date tells it apart
    await put(cache, variant="b", vary="accept")
    assert (await cache.store.lookup(KEY, "b")).purged_at == found.purged_at
    assert await cache.store.purge(prefix="/items", soft=True) == 1
    assert await cache.store.purge(tag="t", soft=True) == 1
    assert await blob(cache, variant="a") == b"entry"


async def test_soft_purge_of_an_expired_entry_affects_nothing(cache: Harness) -> None:
    await put(cache, ttl=0.2, tags=("t",))
    await cache.advance(0.5)

    assert await cache.store.purge(tag="t", soft=True) == 0
    assert await cache.store.purge(url="/items?page=1", soft=True) == 0
    assert await cache.store.lookup(KEY, "") == Lookup(None, None, None)


async def test_long_keys_are_stored_and_purged_exactly(cache: Harness) -> None:
    long_key = LONG_PATH + "|http|h|r"
    sibling = LONG_PATH + "y|http|h|r"  # shares the first 160 characters and more
    await put(cache, key=long_key, blob=b"long")
    await put(cache, key=sibling, blob=b"sibling")

    assert await blob(cache, long_key) == b"long"
    assert await cache.store.purge(url=LONG_PATH) == 1
    assert await blob(cache, long_key) is None
    assert await blob(cache, sibling) == b"sibling"
    assert await cache.store.purge(prefix=LONG_PATH[:180]) == 1
    assert await blob(cache, sibling) is None


async def test_purge_needs_exactly_one_selector(cache: Harness) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        await cache.store.purge()
    with pytest.raises(ValueError, match="exactly one"):
        await cache.store.purge(url="/a", tag="t")


async def test_ping(cache: Harness) -> None:
    assert await cache.store.ping() is True


# Redis only: the layout on the server, corrupt data, round trips, outages.


@pytest.fixture(params=["redis", CLUSTER])
def server_cache(request: pytest.FixtureRequest) -> Harness:
    harness: Harness = request.getfixturevalue(f"{request.param}_cache")
    return harness


async def all_keys(raw: Redis | RedisCluster) -> list[bytes | str]:
    if isinstance(raw, RedisCluster):
        return [k for node in raw.get_primaries() for k in await raw.keys(target_nodes=node)]
    return list(await raw.keys())


async def test_every_redis_key_expires(server_cache: Harness) -> None:
    raw = server_cache.raw
    assert raw is not None
    await put(server_cache, tags=("product",), ttl=30)
    await put(server_cache, key=LONG_PATH + "|http|h|r", ttl=30)
    assert await server_cache.store.try_lock(KEY, 5)
    await server_cache.store.purge(tag="product", soft=True)

    names = sorted(await all_keys(raw))
    assert names == sorted(
        n.encode()
        for n in [
            entry_name(KEY),
            entry_name(LONG_PATH + "|http|h|r"),
            lock_name(KEY),
            tag_name("product"),
        ]
    )
    for name in names:
        assert 0 < await raw.pttl(name) <= 30_000, name
    assert all(b"{" in name and b"}" in name for name in names)  # hash-tagged for Cluster


async def test_corrupt_redis_data_reads_as_absent_and_is_repaired(server_cache: Harness) -> None:
    raw = server_cache.raw
    assert raw is not None
    await raw.hset(entry_name(KEY), mapping={"vary": b"\xff\xfe", "v:": b"x", "purged": b"soon"})
    assert await server_cache.store.lookup(KEY, "") == Lookup(None, None, None)

    await raw.delete(entry_name(KEY))
    await raw.set(entry_name(KEY), b"an old format")
    await raw.set(tag_name("t"), b"not a set")
    assert await server_cache.store.lookup(KEY, "") == Lookup(None, None, None)

    await put(server_cache, blob=b"new", tags=("t",))
    assert await server_cache.store.lookup(KEY, "") == Lookup("", b"new", None)
    assert await server_cache.store.purge(tag="t") == 1


async def test_a_lookup_is_queued_when_called_and_shares_one_flush(redis_cache: Harness) -> None:
    store = redis_cache.store
    assert isinstance(store, RedisCacheStore)
    pipeline: AutoPipeline = store._pipeline
    await put(redis_cache)
    flushes = pipeline.flushes

    pending = store.lookup(KEY, "")
    neighbour = pipeline.execute("PING")  # e.g. the rate-limit script of the same request
    assert (await pending).blob == b"entry"
    await neighbour
    assert pipeline.flushes == flushes + 1


async def test_a_stopped_redis_raises_store_unavailable_and_recovery_is_automatic() -> None:
    with RedisServer() as server:
        client = create_redis(RedisSettings(host=server.host, port=server.port))
        pipeline = AutoPipeline(client, timeout=0.5, breaker=CircuitBreaker(3, cooldown=0.2))
        store = RedisCacheStore(client, pipeline)
        await store.put(KEY, "", "", b"entry", 60, ())
        server.stop()

        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            await store.lookup(KEY, "")
        for call in (
            store.put(KEY, "", "", b"x", 60, ("t",)),
            store.invalidate(KEY),
            store.try_lock(KEY, 5),
            store.unlock(KEY, "t"),
            store.purge(url="/items"),
            store.purge(tag="t"),
            store.purge(prefix="/", soft=True),
        ):
            with pytest.raises(StoreUnavailable):
                await call
        assert await store.ping() is False
        assert time.monotonic() - started < 5  # generous: each call is bounded, none hangs

        server.start()  # empty again: nothing was persisted
        deadline = time.monotonic() + 10
        while not await store.ping() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        await store.put(KEY, "", "", b"again", 60, ())
        assert (await store.lookup(KEY, "")).blob == b"again"
        await pipeline.aclose()
        await client.aclose()


# Memory only: the byte budget.


async def test_the_memory_store_evicts_least_recently_used_keys_over_its_budget() -> None:
    store = MemoryCacheStore(max_bytes=10_000)
    for name in "abc":
        await store.put(f"/{name}|http|h|r", "", "", b"x" * 2500, 60, ("t",))
    await store.lookup("/a|http|h|r", "")  # now more recently used than /b
    await store.put("/d|http|h|r", "", "", b"x" * 2500, 60, ())

    assert (await store.lookup("/b|http|h|r", "")).blob is None
    for name in "acd":
        assert (await store.lookup(f"/{name}|http|h|r", "")).blob is not None
    assert store.bytes_used <= 10_000

    await store.put("/huge|http|h|r", "", "", b"x" * 20_000, 60, ())
    assert (await store.lookup("/huge|http|h|r", "")).blob is None
    for name in "acd":  # a too-large entry does not flush the rest
        assert (await store.lookup(f"/{name}|http|h|r", "")).blob is not None
    assert await store.purge(tag="t") == 2  # the evicted key left its tag too


async def test_the_memory_store_frees_the_bytes_of_what_it_drops() -> None:
    store = MemoryCacheStore(max_bytes=1_000_000)
    await store.put(KEY, "a", "accept", b"x" * 5000, 60, ("t",))
    await store.put(KEY, "a", "accept", b"x" * 100, 60, ("t",))  # replaced, not added
    assert 100 < store.bytes_used < 1000
    await store.put(KEY, "b", "accept-language", b"x" * 100, 60, ())
    await store.invalidate(KEY)
    assert store.bytes_used == 0 and len(store) == 0
