"""Redis connection factory: standalone, TLS, Sentinel or Cluster, one pool per worker.

Defaults are chosen for a request path, not a batch job: a Redis that hangs must cost a request
a fraction of a second (then the circuit breaker takes over), never the 30 s connect / 5 s
command timeouts common in application clients.
"""

from __future__ import annotations

import os
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster, Sentinel
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import SentinelConnectionPool
from redis.backoff import NoBackoff

from gateway.batching import AutoPipeline, CircuitBreaker
from gateway.config import RedisSettings

RedisClient = Redis | RedisCluster


def _common(settings: RedisSettings) -> dict[str, Any]:
    return {
        "socket_connect_timeout": settings.connect_timeout,
        "socket_timeout": max(settings.command_timeout, 1.0),  # the pipeline deadline is tighter
        "socket_keepalive": True,
        "health_check_interval": 30,
        "client_name": f"gateway-{os.getpid()}",
        # One quick reconnect for a dropped idle connection; anything slower is the breaker's job.
        "retry": Retry(NoBackoff(), retries=1),
        "protocol": 2,
    }


def create_redis(settings: RedisSettings) -> RedisClient:
    """Build the worker's client; connections open lazily, so this never blocks start-up."""
    auth: dict[str, Any] = {"username": settings.username}
    if settings.password is not None:
        auth["password"] = settings.password.get_secret_value()
    if settings.mode == "cluster":
        url = settings.url.get_secret_value() if settings.url else None
        cluster_kwargs = {**_common(settings), **auth, "max_connections": settings.pool_max}
        cluster_kwargs.pop("health_check_interval")
        if url:
            return RedisCluster.from_url(url, **cluster_kwargs)
        return RedisCluster(
            host=settings.host or "127.0.0.1", port=settings.port, ssl=settings.tls,
            **cluster_kwargs,
        )
    if settings.mode == "sentinel":
        sentinel = Sentinel(
            list(settings.sentinels),
            sentinel_kwargs={"socket_connect_timeout": settings.connect_timeout,
                             "socket_timeout": 1.0, **auth},
            **_common(settings), **auth, db=settings.db, ssl=settings.tls,
        )
        master: Redis = sentinel.master_for(
            settings.sentinel_master, max_connections=settings.pool_max
        )
        return master
    if settings.url is not None:
        pool = BlockingConnectionPool.from_url(
            settings.url.get_secret_value(), max_connections=settings.pool_max,
            timeout=settings.command_timeout, **_common(settings),
            **({"password": auth["password"]} if "password" in auth else {}),
        )
    else:
        kwargs: dict[str, Any] = {
            "host": settings.host or "127.0.0.1", "port": settings.port, "db": settings.db,
            **auth, **_common(settings),
        }
        if settings.tls:
            from redis.asyncio.connection import SSLConnection

            kwargs["connection_class"] = SSLConnection
        pool = BlockingConnectionPool(
            max_connections=settings.pool_max, timeout=settings.command_timeout, **kwargs
        )
    # from_pool: the client owns the pool, so aclose() closes its connections too (the
    # constructor with connection_pool= leaves them open).
    return Redis.from_pool(pool)


async def close_redis(client: RedisClient) -> None:
    """Close the client with its pool and, in Sentinel mode, the connections to the sentinels
    too: the client does not own those, so they stayed open after aclose()."""
    await client.aclose()
    if isinstance(client, Redis) and isinstance(client.connection_pool, SentinelConnectionPool):
        await client.connection_pool.sentinel_manager.aclose()


def create_pipeline(client: RedisClient, settings: RedisSettings) -> AutoPipeline:
    breaker = CircuitBreaker(settings.breaker_threshold, settings.breaker_cooldown)
    return AutoPipeline(client, timeout=settings.command_timeout, breaker=breaker)


def describe(settings: RedisSettings) -> str:
    """Where Redis is, for logs and check-config: never the password or a URL that may hold it."""
    if settings.mode == "sentinel":
        nodes = ",".join(f"{h}:{p}" for h, p in settings.sentinels)
        return f"sentinel {nodes} master={settings.sentinel_master}"
    if settings.url is not None:
        from urllib.parse import urlsplit

        parts = urlsplit(settings.url.get_secret_value())
        where = parts.path if parts.scheme == "unix" else f"{parts.hostname}:{parts.port or 6379}"
        return f"{settings.mode} {parts.scheme}://{where}"
    scheme = "rediss" if settings.tls else "redis"
    return f"{settings.mode} {scheme}://{settings.host}:{settings.port}/{settings.db}"
