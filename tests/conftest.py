"""Shared fixtures: a real Redis server per test session, flushed for each test that uses it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from tests.support.redis_server import RedisServer


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.close()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """A clean database on the session's server (restarted first if a test stopped it)."""
    if not redis_server.ping():
        redis_server.start()
    with redis.Redis(host=redis_server.host, port=redis_server.port) as client:
        client.flushall()
    return redis_server.url
