"""The demo upstream that the quickstart and docker-compose run (`python -m gateway.demo`)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
import uvicorn
from starlette.testclient import TestClient

from gateway import demo
from tests.support.asgi import in_process_gateway
from tests.support.redis_server import free_port


def test_hello_is_cacheable_for_thirty_seconds_and_counts_what_it_served() -> None:
    with TestClient(demo.app) as client:
        first, second = client.get("/hello"), client.get("/")
    assert first.headers["cache-control"] == "public, max-age=30"
    assert first.json()["message"] == "hello from the demo upstream"
    assert second.json()["served"] == first.json()["served"] + 1


def test_echo_shows_what_reached_the_upstream_and_is_never_cached() -> None:
    with TestClient(demo.app) as client:
        response = client.post("/echo/a/b?x=1", content=b"12345", headers={"X-Probe": "yes"})
    doc = response.json()
    assert response.headers["cache-control"] == "no-store"
    assert (doc["method"], doc["path"], doc["query"], doc["body_bytes"]) == ("POST", "/echo/a/b", "x=1", 5)
    assert doc["headers"]["x-probe"] == "yes"


def test_status_answers_the_code_asked_for_and_slow_sleeps_as_asked() -> None:
    with TestClient(demo.app) as client:
        teapot = client.get("/status/418")
        slow = client.get("/slow?seconds=0.01")
    assert teapot.status_code == 418 and json.loads(teapot.content) == {"status": 418}
    assert slow.json() == {"slept": 0.01}


def test_main_serves_on_the_host_and_port_given(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, object] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: seen.update(app=app, **kwargs))
    monkeypatch.setattr("sys.argv", ["gateway.demo", "--host", "0.0.0.0", "--port", "9000"])
    demo.main()
    assert seen["app"] is demo.app and (seen["host"], seen["port"]) == ("0.0.0.0", 9000)


@pytest.fixture
async def demo_url() -> AsyncIterator[str]:
    """The demo app under uvicorn on loopback, in the test's own event loop (uvicorn puts back
    the signal handlers it borrows while serving)."""
    port = free_port()
    config = uvicorn.Config(demo.app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    async with asyncio.timeout(10):
        while not server.started:
            await asyncio.sleep(0.01)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    await task


async def test_the_quickstart_second_hello_is_a_cache_hit(demo_url: str) -> None:
    async with in_process_gateway(demo_url, GATEWAY_CACHE_ENABLED="true") as gateway:
        first = await gateway.request("GET", "/hello")
        second = await gateway.request("GET", "/hello")
    assert (first.status, second.status) == (200, 200)
    assert (first.header(b"x-cache"), second.header(b"x-cache")) == (b"MISS", b"HIT")
    assert json.loads(second.body)["served"] == json.loads(first.body)["served"]
