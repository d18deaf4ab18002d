"""Redis connection factory: standalone, TLS, Sentinel or Cluster, one pool per worker.

Defaults are chosen for a request path, not a batch job: a Redis that hangs must cost a request
a fraction of a second (then the circuit breaker takes over), never the 30 s connect / 5 s
command timeouts common in application clients.

TLS: the data connections use TLS with REDIS_TLS=true or a rediss:// URL; Sentinel connections
follow them unless REDIS_SENTINEL_TLS says otherwise, since a Sentinel is sent the same AUTH.
Addresses are printed only through `describe`/`redact_url`, which never show a credential.
"""

from __future__ import annotations

import asyncio
import os
import re
from typing import Any
from urllib.parse import urlsplit

from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster, Sentinel
from redis.asyncio.connection import SSLConnection
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import SentinelConnectionPool
from redis.backoff import NoBackoff

from gateway.autopipeline import AutoPipeline
from gateway.breaker import CircuitBreaker
from gateway.config import RedisSettings

RedisClient = Redis | RedisCluster
_USERINFO = re.compile(r"(?<=://)[^@/\s]*@")
_REDIS_URL = re.compile(r"(?:rediss?|unix)://[^\s'\"<>]+", re.IGNORECASE)


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


def tls_options(settings: RedisSettings) -> dict[str, Any]:
    """redis-py's TLS keywords: verify the server (CA file or system store, hostname checked)
    and present a client certificate when one is configured."""
    options: dict[str, Any] = {"ssl_cert_reqs": "required", "ssl_check_hostname": True}
    if settings.tls_ca_file:
        options["ssl_ca_certs"] = settings.tls_ca_file
    if settings.tls_cert_file:
        options["ssl_certfile"] = settings.tls_cert_file
    if settings.tls_key_file:
        options["ssl_keyfile"] = settings.tls_key_file
    return options


def create_redis(settings: RedisSettings) -> RedisClient:
    """Build the worker's client; connections open lazily, so this never blocks start-up."""
    auth: dict[str, Any] = {"username": settings.username}
    if settings.password is not None:
        auth["password"] = settings.password.get_secret_value()
    tls = tls_options(settings) if settings.data_tls else {}
    if settings.mode == "cluster":
        url = settings.url.get_secret_value() if settings.url else None
        cluster_kwargs = {**_common(settings), **auth, **tls, "max_connections": settings.pool_max}
        cluster_kwargs.pop("health_check_interval")
        if url:
            return RedisCluster.from_url(url, **cluster_kwargs)
        return RedisCluster(
            host=settings.host or "127.0.0.1",
            port=settings.port,
            ssl=settings.tls,
            **cluster_kwargs,
        )
    if settings.mode == "sentinel":
        sentinel_tls: dict[str, Any] = {}
        if settings.sentinels_use_tls:
            sentinel_tls = {"ssl": True, **tls_options(settings)}
        sentinel = Sentinel(
            list(settings.sentinels),
            sentinel_kwargs={
                "socket_connect_timeout": settings.connect_timeout,
                "socket_timeout": 1.0,
                **auth,
                **sentinel_tls,
            },
            **_common(settings),
            **auth,
            **tls,
            db=settings.db,
            ssl=settings.data_tls,
        )
        master: Redis = sentinel.master_for(settings.sentinel_master, max_connections=settings.pool_max)
        return master
    if settings.url is not None:
        # REDIS_USERNAME/REDIS_PASSWORD fill in what the URL leaves out (redis-py lets the URL's
        # own credentials override these keywords): `redis://redis-counters:6379/0` must log in
        # as the ACL user, not as `default`, which the shipped ACL file disables.
        pool = BlockingConnectionPool.from_url(
            settings.url.get_secret_value(),
            max_connections=settings.pool_max,
            timeout=settings.command_timeout,
            **_common(settings),
            **tls,
            **{key: value for key, value in auth.items() if value is not None},
        )
    else:
        kwargs: dict[str, Any] = {
            "host": settings.host or "127.0.0.1",
            "port": settings.port,
            "db": settings.db,
            **auth,
            **_common(settings),
        }
        if settings.tls:
            kwargs.update(connection_class=SSLConnection, **tls)
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
        manager = client.connection_pool.sentinel_manager
        if hasattr(manager, "aclose"):
            await manager.aclose()
        else:  # redis-py before 5.? has no Sentinel.aclose(): close each sentinel's client
            for sentinel in manager.sentinels:
                await sentinel.aclose()


def create_pipeline(client: RedisClient, settings: RedisSettings) -> AutoPipeline:
    breaker = CircuitBreaker(settings.breaker_threshold, settings.breaker_cooldown)
    return AutoPipeline(client, timeout=settings.command_timeout, breaker=breaker)


def redact_url(url: str) -> str:
    """The URL without its user-info (`user:password@`) and query (which may carry options
    such as a password too): what may be printed of a Redis URL."""
    parts = urlsplit(url.strip())
    if parts.scheme == "unix":
        return f"unix://{parts.path}"
    try:
        host = parts.hostname or ""
        port = parts.port or 6379
    except ValueError:
        return f"{parts.scheme}://<malformed>"
    where = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{where}:{port}{parts.path}"


def redact_text(text: str) -> str:
    """Free text (an exception message) with every Redis URL redacted (`redact_url`) and any
    other `scheme://user:password@` cut to `scheme://`."""
    return _USERINFO.sub("", _REDIS_URL.sub(lambda m: redact_url(m.group(0)), text))


def describe(settings: RedisSettings) -> str:
    """Where Redis is, for logs and check-config: never the password or a URL that may hold it."""
    if settings.mode == "sentinel":
        nodes = ",".join(f"{h}:{p}" for h, p in settings.sentinels)
        tls = "tls" if settings.sentinels_use_tls else "plaintext"
        return (
            f"sentinel {nodes} ({tls}) master={settings.sentinel_master} "
            f"({'tls' if settings.data_tls else 'plaintext'})"
        )
    if settings.url is not None:
        return f"{settings.mode} {redact_url(settings.url.get_secret_value())}"
    scheme = "rediss" if settings.tls else "redis"
    return f"{settings.mode} {scheme}://{settings.host}:{settings.port}/{settings.db}"


async def server_infos(client: RedisClient, timeout: float) -> list[dict[str, Any]]:
    """`INFO server` of the server (of every Cluster node), within `timeout` seconds.
    Raises TimeoutError or a redis error; the caller decides what an unknown version means."""
    async with asyncio.timeout(timeout):
        if isinstance(client, RedisCluster):
            reply = await client.info("server", target_nodes=RedisCluster.ALL_NODES)
        else:
            reply = await client.info("server")
    if isinstance(reply, dict) and reply and all(isinstance(v, dict) for v in reply.values()):
        return [dict(v) for v in reply.values()]  # per node
    return [dict(reply)]
