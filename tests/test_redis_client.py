"""The Redis connection factory's choices, checked without a server (connections are lazy)."""

from __future__ import annotations

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.connection import SSLConnection

from gateway.config import Settings
from gateway.environment import settings_from_env
from gateway.redis_client import create_redis, describe


def settings(**env: str) -> Settings:
    return settings_from_env({"GATEWAY_UPSTREAM_URL": "http://backend:1", **env})


def test_standalone_pool_is_bounded_and_fails_fast() -> None:
    client = create_redis(settings(REDIS_HOST="cache", REDIS_PASSWORD="pw", REDIS_DB="3").redis)
    assert isinstance(client, Redis)
    pool = client.connection_pool
    assert isinstance(pool, BlockingConnectionPool) and pool.max_connections == 20
    kwargs = pool.connection_kwargs
    assert (kwargs["host"], kwargs["db"], kwargs["password"]) == ("cache", 3, "pw")
    assert kwargs["socket_connect_timeout"] == 0.25
    assert pool.timeout == 0.25  # waiting for a pooled connection is bounded too


def test_tls_and_url_forms() -> None:
    tls = create_redis(settings(REDIS_HOST="cache", REDIS_TLS="true").redis)
    assert isinstance(tls, Redis) and tls.connection_pool.connection_class is SSLConnection
    url = create_redis(settings(REDIS_URL="rediss://user:pw@cache:6380/2", REDIS_POOL_MAX="5").redis)
    assert isinstance(url, Redis)
    assert url.connection_pool.max_connections == 5
    assert url.connection_pool.connection_kwargs["port"] == 6380


def _connection_kwargs(client: object) -> dict[str, object]:
    assert isinstance(client, Redis)  # standalone settings build a standalone client
    return dict(client.connection_pool.connection_kwargs)


def test_a_url_without_credentials_logs_in_as_redis_username_and_the_urls_own_win() -> None:
    """GATEWAY_RATE_LIMIT_REDIS_URL=redis://redis-counters:6379/0 with REDIS_USERNAME=gateway
    (docker-compose.yml, deploy/kubernetes): without the user, the client would AUTH as
    `default`, which the shipped ACL file disables, and every counter call would fail."""
    env = {"REDIS_HOST": "cache", "REDIS_USERNAME": "gateway", "REDIS_PASSWORD": "pw"}
    counters = settings(**env, GATEWAY_RATE_LIMIT_REDIS_URL="redis://redis-counters:6379/0")
    assert counters.counters_redis is not None
    kwargs = _connection_kwargs(create_redis(counters.counters_redis))
    assert (kwargs["host"], kwargs["username"], kwargs["password"]) == ("redis-counters", "gateway", "pw")
    for url in ("redis://own:secret@cache:6379/0", "redis://cache:6379/0?username=own&password=secret"):
        kwargs = _connection_kwargs(create_redis(settings(**env, REDIS_URL=url).redis))
        assert (kwargs["username"], kwargs["password"]) == ("own", "secret")
    # Nothing set: no AUTH at all, as before.
    kwargs = _connection_kwargs(create_redis(settings(REDIS_URL="redis://cache:6379/0").redis))
    assert kwargs.get("username") is None and kwargs.get("password") is None


def test_sentinel_pool_honours_the_maximum() -> None:
    client = create_redis(settings(REDIS_SENTINELS="127.0.0.1:26379", REDIS_POOL_MAX="7").redis)
    assert isinstance(client, Redis)
    assert client.connection_pool.max_connections == 7


def test_describe_never_shows_the_password() -> None:
    for env in (
        {"REDIS_URL": "redis://u:s3cret@cache:6379/0"},
        {"REDIS_HOST": "cache", "REDIS_PASSWORD": "s3cret"},
    ):
        text = describe(settings(**env).redis)
        assert "s3cret" not in text and "cache" in text
