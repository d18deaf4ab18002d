"""Shared fixtures (a real Redis server per test session) and the test tiers (tests/tiers.py)."""

from __future__ import annotations

from collections.abc import Generator, Iterator

import pytest
import redis

from tests.support.redis_server import RedisServer
from tests.tiers import ProcessGuard, classify

_guard = ProcessGuard()


def pytest_configure(config: pytest.Config) -> None:
    _guard.install()


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by the markers given here
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    classify(items)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, object, object]:
    _guard.current = item
    try:
        return (yield)
    finally:
        _guard.current = None


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
