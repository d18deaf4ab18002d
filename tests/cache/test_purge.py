"""POST <admin>/purge: authorisation, request validation and its effect on a real store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Route

from gateway import config
from gateway.admin_auth import AdminGuard
from gateway.autopipeline import AutoPipeline
from gateway.cache.keys import target_form
from gateway.cache.memory_store import MemoryCacheStore
from gateway.cache.purge import purge_endpoint
from gateway.cache.redis_store import RedisCacheStore
from gateway.cache.store import CacheStore
from gateway.config import CacheSettings, RedisSettings, Secret, Settings
from gateway.redis_client import create_redis
from tests.support.redis_server import free_port

TOKEN = "s3cret-admin-token"
AUTH = {"authorization": f"Bearer {TOKEN}"}
KEYS = [
    "/items?page=1|http|a.test|shop",
    "/items?page=1|http|b.test|shop",
    "/items?page=2|http|a.test|shop",
    "/other|http|a.test|shop",
]


@dataclass
class Runtime:
    settings: Settings
    cache_store: CacheStore | None
    admin_guard: AdminGuard = field(default_factory=AdminGuard)


def client_for(runtime: Runtime) -> httpx.AsyncClient:
    app = Starlette(routes=[Route("/__gateway/purge", purge_endpoint(runtime), methods=["POST"])])
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw.test")


async def filled(store: CacheStore) -> CacheStore:
    for key in KEYS:
        await store.put(key, "", "", b"entry", 60, ("items",) if "items" in key else ())
    return store


async def remaining(store: CacheStore) -> list[str]:
    return [key for key in KEYS if (await store.lookup(key, "")).blob is not None]


@pytest.fixture
async def store() -> CacheStore:
    return await filled(MemoryCacheStore())


@pytest.fixture
async def client(store: CacheStore) -> AsyncIterator[httpx.AsyncClient]:
    runtime = Runtime(Settings(routes=(), admin_token=Secret(TOKEN)), store)
    async with client_for(runtime) as client:
        yield client


async def purge(client: httpx.AsyncClient, body: Any, **headers: str) -> httpx.Response:
    return await client.post("/__gateway/purge", json=body, headers=headers or AUTH)


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Basic YWRtaW46eA==", "Bearer", "Bearer  ", f"Token {TOKEN}", f"Bearer {TOKEN} extra"],
)
async def test_missing_or_malformed_credentials_get_401(
    client: httpx.AsyncClient, store: CacheStore, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"authorization": authorization}
    response = await client.post("/__gateway/purge", json={"url": "/items"}, headers=headers)

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == 401
    assert await remaining(store) == KEYS


@pytest.mark.parametrize("token", ["wrong", TOKEN + "x", TOKEN[:-1], "ünïcode"])
async def test_a_wrong_token_gets_403(client: httpx.AsyncClient, store: CacheStore, token: str) -> None:
    response = await client.post(
        "/__gateway/purge",
        json={"url": "/items?page=1"},
        headers={b"authorization": f"Bearer {token}".encode()},
    )
    assert response.status_code == 403
    assert TOKEN not in response.text
    assert await remaining(store) == KEYS


async def test_the_scheme_is_case_insensitive(client: httpx.AsyncClient) -> None:
    response = await purge(client, {"url": "/other"}, authorization=f"bearer {TOKEN}")
    assert response.status_code == 200


async def test_without_an_admin_token_purging_is_disabled(store: CacheStore) -> None:
    async with client_for(Runtime(Settings(routes=()), store)) as client:
        response = await purge(client, {"url": "/items?page=1"})

    assert response.status_code == 403
    assert "disabled" in response.json()["detail"]
    assert await remaining(store) == KEYS


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[1, 2]",
        b'"url"',
        b"{}",
        b'{"url": "/a", "tag": "t"}',
        b'{"url": ""}',
        b'{"url": 5}',
        b'{"url": "http://a.test/items"}',
        b'{"prefix": "items"}',
        b'{"tag": "t", "soft": "yes"}',
        b'{"tags": "t"}',
        b"\xff\xfe",
    ],
)
async def test_a_bad_body_gets_400(client: httpx.AsyncClient, store: CacheStore, body: bytes) -> None:
    response = await client.post("/__gateway/purge", content=body, headers=AUTH)

    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["title"] == "Bad Request"
    assert await remaining(store) == KEYS


async def test_an_oversized_body_gets_413(client: httpx.AsyncClient) -> None:
    response = await purge(client, {"tag": "x" * 20_000})
    assert response.status_code == 413


async def test_purge_by_url_removes_it_on_every_host(client: httpx.AsyncClient, store: CacheStore) -> None:
    response = await purge(client, {"url": "/items?page=1"})

    assert response.status_code == 200
    assert response.json() == {"purged": 2, "soft": False}
    assert response.headers["cache-control"] == "no-store"
    assert await remaining(store) == KEYS[2:]


async def test_purge_by_url_and_prefix_normalise_the_path_like_requests(
    client: httpx.AsyncClient, store: CacheStore
) -> None:
    """Keys hold normalised paths: `//items` and `/./items` name what `/items` stored."""
    assert (await purge(client, {"url": "//./items?page=1"})).json()["purged"] == 2
    assert (await purge(client, {"prefix": "//oth"})).json()["purged"] == 1
    assert (await purge(client, {"url": "/../items"})).status_code == 400


async def test_purge_by_prefix_and_by_tag(client: httpx.AsyncClient, store: CacheStore) -> None:
    assert (await purge(client, {"prefix": "/oth"})).json() == {"purged": 1, "soft": False}
    assert (await purge(client, {"tag": "items"})).json() == {"purged": 3, "soft": False}
    assert await remaining(store) == []


async def test_soft_purge_keeps_entries_but_marks_them(client: httpx.AsyncClient, store: CacheStore) -> None:
    response = await purge(client, {"prefix": "/items", "soft": True})

    assert response.json() == {"purged": 3, "soft": True}
    assert await remaining(store) == KEYS
    assert (await store.lookup(KEYS[0], "")).purged_at is not None
    assert (await store.lookup(KEYS[3], "")).purged_at is None


async def test_a_url_is_matched_as_the_cache_keys_it(store: CacheStore) -> None:
    shop = config.Route(
        "shop",
        "/items",
        ("http://backend.test",),
        cache=CacheSettings(ignore_query_params=frozenset({"utm_source"})),
    )
    settings = Settings(routes=(shop,), admin_token=Secret(TOKEN))
    # A client's raw UTF-8 path is keyed in its normal form (non-ASCII bytes percent-encoded by
    # the context layer); the query stays as sent.
    keyed = target_form(b"/caf%C3%A9", "q=\u00fc".encode())
    await store.put(f"{keyed}|http|a.test|shop", "", "", b"entry", 60, ())
    async with client_for(Runtime(settings, store)) as client:
        ignored = await purge(client, {"url": "/items?utm_source=mail&page=1"})
        empty_query = await purge(client, {"url": "/other?"})
        text = await purge(client, {"url": "/caf\u00e9?q=\u00fc"})

    assert ignored.json()["purged"] == 2
    assert empty_query.json()["purged"] == 1
    assert text.json()["purged"] == 1
    assert await remaining(store) == KEYS[2:3]


async def test_purge_on_redis_removes_what_every_process_sees(redis_url: str) -> None:
    client = create_redis(RedisSettings(url=Secret(redis_url)))
    pipeline = AutoPipeline(client)
    store = await filled(RedisCacheStore(client, pipeline))
    runtime = Runtime(Settings(routes=(), admin_token=Secret(TOKEN)), store)
    other_process = RedisCacheStore(client, AutoPipeline(client))
    try:
        async with client_for(runtime) as http:
            response = await purge(http, {"url": "/items?page=1"})
        assert response.json() == {"purged": 2, "soft": False}
        assert await remaining(other_process) == KEYS[2:]
    finally:
        await client.aclose()


async def test_an_unreachable_store_gets_503() -> None:
    client = create_redis(RedisSettings(host="127.0.0.1", port=free_port()))  # nothing listens
    store = RedisCacheStore(client, AutoPipeline(client))
    runtime = Runtime(Settings(routes=(), admin_token=Secret(TOKEN)), store)
    try:
        async with client_for(runtime) as http:
            response = await purge(http, {"prefix": "/"})
    finally:
        await client.aclose()

    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert "127.0.0.1" not in response.text


async def test_no_cache_store_gets_503() -> None:
    async with client_for(Runtime(Settings(routes=(), admin_token=Secret(TOKEN)), None)) as http:
        response = await purge(http, {"tag": "t"})
    assert response.status_code == 503
