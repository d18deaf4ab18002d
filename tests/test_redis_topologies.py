"""The gateway's Redis layer on real Redis Cluster and Sentinel topologies (no mocks).

A 3-primary Cluster is started once for the module; Sentinel topologies are cheap (~0.1 s) and
a failover consumes one, so those tests get their own.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis
from redis.asyncio import Redis, RedisCluster

from gateway.autopipeline import AutoPipeline
from gateway.cache.redis_store import RedisCacheStore, entry_name
from gateway.cache.store import Lookup
from gateway.config import Settings
from gateway.environment import settings_from_env
from gateway.errors import StoreUnavailable
from gateway.lua import LuaScript
from gateway.ratelimit.limiter import RedisLimiter, counter_keys
from gateway.ratelimit.policy import parse_limits
from gateway.redis_client import RedisClient, close_redis, create_pipeline, create_redis
from tests.support.redis_server import RedisServer, free_port
from tests.support.redis_topologies import MASTER_NAME, LocalCluster, LocalSentinel

INCR = LuaScript("return redis.call('INCRBY', KEYS[1], ARGV[1])")
KEYS = [f"key:{i}" for i in range(300)]  # spread over all three primaries


def settings(env: dict[str, str]) -> Settings:
    return settings_from_env({"GATEWAY_UPSTREAM_URL": "http://127.0.0.1:9", **env})


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster(masters=3) as topology:
        yield topology


@pytest.fixture
async def cluster_client(cluster: LocalCluster) -> AsyncIterator[RedisClient]:
    cluster.flushall()
    env = {"REDIS_MODE": "cluster", "REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(cluster.ports[0])}
    client = create_redis(settings(env).redis)
    yield client
    await close_redis(client)


@pytest.fixture
async def cluster_pipeline(cluster_client: RedisClient) -> AsyncIterator[AutoPipeline]:
    pipeline = AutoPipeline(cluster_client, timeout=2.0)
    yield pipeline
    await pipeline.aclose()


@pytest.fixture
def sentinel() -> Iterator[LocalSentinel]:
    with LocalSentinel(sentinels=3) as topology:
        yield topology


def sentinel_settings(topology: LocalSentinel) -> Settings:
    return settings({"REDIS_SENTINELS": topology.env_value, "REDIS_SENTINEL_MASTER": MASTER_NAME})


def node(server_port: int) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=server_port)


async def one_flush(pipeline: AutoPipeline, futures: list[asyncio.Future[Any]]) -> list[Any]:
    """Await futures queued in one tick and check they cost exactly one flush."""
    before = pipeline.flushes
    replies = await asyncio.gather(*futures)
    assert pipeline.flushes == before + 1
    return replies


# -- Cluster: the auto-pipeline ---------------------------------------------------------------


async def test_one_flush_reaches_keys_on_every_primary(
    cluster: LocalCluster, cluster_pipeline: AutoPipeline
) -> None:
    p = cluster_pipeline
    await one_flush(p, [p.execute("SET", k, i) for i, k in enumerate(KEYS)])
    await one_flush(p, [p.execute("HSET", f"h:{k}", "a", k, "b", "2") for k in KEYS])

    mixed = [p.execute("GET", k) for k in KEYS]
    mixed += [p.execute("HMGET", f"h:{k}", "a", "b", "missing") for k in KEYS]
    mixed += [p.evalsha(INCR, [k], [1000]) for k in KEYS]
    replies = await one_flush(p, mixed)

    n = len(KEYS)
    assert replies[:n] == [str(i).encode() for i in range(n)]
    assert replies[n : 2 * n] == [[k.encode(), b"2", None] for k in KEYS]
    assert replies[2 * n :] == [i + 1000 for i in range(n)]
    for port in cluster.ports:  # the keys really are spread: every primary holds some
        with node(port) as primary:
            assert primary.dbsize() > 0


async def test_evalsha_recovers_from_noscript_on_each_node_separately(
    cluster: LocalCluster, cluster_pipeline: AutoPipeline
) -> None:
    p = cluster_pipeline
    assert await p.evalsha(INCR, [KEYS[0]], [1]) == 1  # loaded on KEYS[0]'s node only
    assert await one_flush(p, [p.evalsha(INCR, [k], [1]) for k in KEYS]) == [2] + [1] * 299

    with node(cluster.ports[1]) as primary:  # one node forgets every script (e.g. a restart)
        primary.script_flush()
    assert await one_flush(p, [p.evalsha(INCR, [k], [1]) for k in KEYS]) == [3] + [2] * 299


async def test_a_resharded_slot_is_followed_through_ask_and_moved(
    cluster: LocalCluster, cluster_pipeline: AutoPipeline
) -> None:
    p = cluster_pipeline
    key, fresh = "{moving}:a", "{moving}:b"
    assert await p.execute("SET", key, "before") is True  # the client now caches the slot map
    assert await p.evalsha(INCR, ["{moving}:n"], [1]) == 1
    slot = redis.crc.key_slot(key.encode())
    ids = {}
    for port in cluster.ports:
        with node(port) as primary:
            ids[port] = primary.execute_command("CLUSTER", "MYID").decode()
    with node(cluster.ports[0]) as any_node:
        owner = next(
            int(s[2][1]) for s in any_node.execute_command("CLUSTER", "SLOTS") if s[0] <= slot <= s[1]
        )
    target = next(port for port in cluster.ports if port != owner)

    with node(owner) as src, node(target) as dst:
        dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", ids[owner])
        src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", ids[target])
        src.execute_command("MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS", key)
        # Mid-migration the source answers ASK for keys it no longer has.
        assert await one_flush(p, [p.execute("GET", key), p.execute("SET", fresh, "new")]) == [
            b"before",
            True,
        ]
        src.execute_command("MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS", "{moving}:n")
        for port in [target, owner, *(q for q in cluster.ports if q not in (owner, target))]:
            with node(port) as each:
                each.execute_command("CLUSTER", "SETSLOT", slot, "NODE", ids[target])
        assert dst.get(fresh) == b"new"  # the ASK redirect wrote it on the importing node

    # Migration done: the stale slot map gets MOVED, and the script is loaded on the new node.
    replies = await one_flush(p, [p.execute("GET", key), p.evalsha(INCR, ["{moving}:n"], [1])])
    assert replies == [b"before", 2]
    assert p.breaker.failures == 0


async def test_an_error_reply_fails_only_its_own_caller(
    cluster_pipeline: AutoPipeline,
) -> None:
    p = cluster_pipeline
    await p.execute("SET", "plain", "x")
    results = await asyncio.gather(
        p.execute("HGET", "plain", "field"), p.execute("GET", "plain"), return_exceptions=True
    )
    assert isinstance(results[0], StoreUnavailable)
    assert "WRONGTYPE" in str(results[0])
    assert results[1] == b"x"


async def test_a_command_the_cluster_cannot_route_fails_as_store_unavailable(
    cluster_pipeline: AutoPipeline,
) -> None:
    # redis-py raises RedisClusterException (not a RedisError) before sending anything; the
    # caller must see the gateway's error, never a CancelledError.
    with pytest.raises(StoreUnavailable):
        await cluster_pipeline.execute("MGET", "a", "b")
    assert await cluster_pipeline.execute("SET", "a", "1") is True


async def test_an_unreachable_cluster_fails_fast_as_store_unavailable() -> None:
    env = {"REDIS_MODE": "cluster", "REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(free_port())}
    config = settings(env).redis
    client = create_redis(config)
    pipeline = create_pipeline(client, config)
    started = time.monotonic()
    for _ in range(config.breaker_threshold + 1):
        with pytest.raises(StoreUnavailable):
            await pipeline.execute("GET", "k")
    assert time.monotonic() - started < 5  # generous: each attempt is bounded by 0.15 s
    assert pipeline.breaker.is_open
    await close_redis(client)


# -- Cluster: the stores built on the pipeline --------------------------------------------------


async def test_cache_store_round_trip_on_the_cluster(
    cluster_client: RedisClient, cluster_pipeline: AutoPipeline
) -> None:
    store = RedisCacheStore(cluster_client, cluster_pipeline)
    urls = [f"/items/{i}|http://shop.test|shop" for i in range(30)]
    for url in urls:
        await store.put(url, "gzip", "accept-encoding", url.encode(), 60, ["items", url[:9]])

    found = await one_flush(cluster_pipeline, [store.lookup(u, "gzip") for u in urls])  # type: ignore[misc]
    assert found == [Lookup("accept-encoding", u.encode(), None) for u in urls]
    assert await store.lookup(urls[0], "br") == Lookup("accept-encoding", None, None)

    assert await store.purge(tag="items") == len(urls)  # members live on every primary
    assert await store.lookup(urls[0], "gzip") == Lookup(None, None, None)
    nodes = {
        cluster_client.get_node_from_key(entry_name(u)).port  # type: ignore[union-attr]
        for u in urls
    }
    assert len(nodes) > 1


async def test_multi_limit_decision_on_the_cluster(
    cluster_client: RedisClient, cluster_pipeline: AutoPipeline
) -> None:
    limiter = RedisLimiter(cluster_pipeline)
    # Windows far longer than the test (under coverage on a loaded machine, four flushes can
    # take more than a second, and a 1-second window would refill in between).
    limits = parse_limits("3/minute;5/hour", "sliding", "GATEWAY_RATE_LIMIT")
    clients = [f"default|ip={i}" for i in range(20)]

    rounds = []
    for _ in range(4):  # each round: every client's decision in one flush
        before = cluster_pipeline.flushes
        rounds.append(await asyncio.gather(*(limiter.hit(c, limits, "sliding", 1) for c in clients)))
        assert cluster_pipeline.flushes == before + 1
    allowed = [[d.allowed for d in decisions] for decisions in rounds]
    assert allowed == [[True] * 20] * 3 + [[False] * 20]
    last = rounds[2][0]
    assert [s.remaining for s in last.states] == [0, 2]
    assert rounds[3][0].retry_after_ms > 0
    ports = {
        cluster_client.get_node_from_key(counter_keys(c, limits, "sliding")[0]).port  # type: ignore[union-attr]
        for c in clients
    }
    assert len(ports) > 1  # the clients' counters really live on several primaries


# -- Sentinel --------------------------------------------------------------------------------


async def test_sentinel_mode_discovers_and_writes_to_the_master(sentinel: LocalSentinel) -> None:
    config = sentinel_settings(sentinel).redis
    client = create_redis(config)
    pipeline = create_pipeline(client, config)
    assert await pipeline.execute("SET", "where", "master") is True
    assert await pipeline.evalsha(INCR, ["n"], [5]) == 5
    with node(sentinel.master.port) as master:
        assert master.get("where") == b"master"
    with node(sentinel.replica.port) as replica:
        _wait(lambda: replica.get("where") == b"master", 5)
    with node(sentinel.sentinels[0].port) as watcher:
        assert len(watcher.client_list()) > 1  # the gateway's discovery connection and ours
        await close_redis(client)
        _wait(lambda: len(watcher.client_list()) == 1, 5)  # ours only: nothing left open


async def test_the_client_recovers_by_itself_after_a_failover(sentinel: LocalSentinel) -> None:
    config = sentinel_settings(sentinel).redis
    client = create_redis(config)
    pipeline = create_pipeline(client, config)
    assert await pipeline.execute("SET", "before", "1") is True
    new_master = sentinel.replica.port
    with node(new_master) as replica:
        _wait(lambda: replica.get("before") == b"1", 5)

    await asyncio.to_thread(sentinel.master.stop)
    stopped = time.monotonic()
    failures = 0
    while True:  # what requests see: errors while no master is known, then service again
        try:
            await pipeline.execute("SET", "after", "2")
            break
        except StoreUnavailable:
            failures += 1
            assert time.monotonic() - stopped < 20, "the client never found the new master"
            await asyncio.sleep(0.05)
    recovered = time.monotonic() - stopped

    assert failures > 0
    assert recovered < 20  # sentinel needs ~1-4 s here, plus up to one breaker cooldown (2 s)
    with node(new_master) as master:
        assert master.info("replication")["role"] == "master"
        assert master.get("after") == b"2"
    assert await pipeline.execute("GET", "before") == b"1"
    assert await pipeline.evalsha(INCR, ["n"], [1]) == 1  # scripts load on the new master
    assert not pipeline.breaker.is_open
    await close_redis(client)


async def test_a_demoted_master_is_left_for_the_new_one(sentinel: LocalSentinel) -> None:
    """A manual failover keeps the old master running as a replica: pooled connections to it
    must not keep failing with READONLY."""
    config = sentinel_settings(sentinel).redis
    client = create_redis(config)
    pipeline = create_pipeline(client, config)
    assert await pipeline.execute("SET", "before", "1") is True
    old, new = sentinel.master.port, sentinel.replica.port

    with redis.Redis(*sentinel.addresses[0]) as sentinel_client:
        # Sentinel refuses (NOGOODSLAVE) until it has seen the replica in sync; keep asking.
        deadline = time.monotonic() + 20
        while True:
            try:
                sentinel_client.execute_command("SENTINEL", "FAILOVER", MASTER_NAME)
                break
            except redis.ResponseError as exc:
                if "NOGOODSLAVE" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
    _wait(lambda: sentinel.master_port() == new and _role(old) == "slave", 30)

    started = time.monotonic()
    while True:
        try:
            await pipeline.execute("SET", "after", "2")
            break
        except StoreUnavailable:
            assert time.monotonic() - started < 10, "writes kept going to the demoted master"
            await asyncio.sleep(0.05)
    with node(new) as master:
        assert master.get("after") == b"2"
    await close_redis(client)


# -- the factory, for each mode, from the environment --------------------------------------------


# getfixturevalue hides the topology fixtures from tier inference (tests/tiers.py): marked here.
@pytest.mark.parametrize(
    "mode",
    [
        "standalone",
        *(pytest.param(mode, marks=pytest.mark.topology) for mode in ("sentinel", "cluster", "cluster-url")),
    ],
)
async def test_create_redis_for_each_mode_from_the_environment(
    mode: str, request: pytest.FixtureRequest
) -> None:
    env: dict[str, str]
    if mode == "standalone":
        server: RedisServer = request.getfixturevalue("redis_server")
        request.getfixturevalue("redis_url")
        env = {"REDIS_HOST": server.host, "REDIS_PORT": str(server.port)}
        expected: type = Redis
    elif mode == "sentinel":
        topology: LocalSentinel = request.getfixturevalue("sentinel")
        env = {
            "REDIS_MODE": "sentinel",
            "REDIS_SENTINELS": topology.env_value,
            "REDIS_SENTINEL_MASTER": MASTER_NAME,
        }
        expected = Redis
    else:
        local: LocalCluster = request.getfixturevalue("cluster")
        env = {"REDIS_MODE": "cluster", "REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(local.ports[1])}
        if mode == "cluster-url":
            env = {"REDIS_MODE": "cluster", "REDIS_URL": local.url}
        expected = RedisCluster
    config = settings(env).redis
    client = create_redis(config)
    assert isinstance(client, expected)
    pipeline = create_pipeline(client, config)
    futures = [pipeline.execute("SET", k, k) for k in KEYS[:50]]
    futures += [pipeline.execute("GET", k) for k in KEYS[:50]]
    assert (await asyncio.gather(*futures))[50:] == [k.encode() for k in KEYS[:50]]
    assert await pipeline.execute("PING") in (True, b"PONG")
    await pipeline.aclose()
    await close_redis(client)


# -- helpers -------------------------------------------------------------------------------------


def _wait(condition: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def _role(port: int) -> str:
    with node(port) as server:
        return str(server.info("replication")["role"])
