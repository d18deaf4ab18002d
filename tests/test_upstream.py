"""The upstream adapters: the shared header deadline and the exact (httpx) path."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
import respx

from gateway.deadlines import HeaderDeadlines
from gateway.errors import BadGateway, GatewayTimeout
from gateway.upstream_verbatim import VerbatimUpstream


async def test_a_request_past_its_deadline_is_cancelled_within_the_resolution() -> None:
    deadlines = HeaderDeadlines(0.1)

    async def waiting() -> str:
        watch = deadlines.watch()
        try:
            await asyncio.sleep(5)
            return "answered"
        except asyncio.CancelledError:
            return "expired" if watch.expired else "cancelled"
        finally:
            deadlines.done(watch)

    started = time.perf_counter()
    assert await asyncio.create_task(waiting()) == "expired"
    assert 0.09 <= time.perf_counter() - started < 0.1 + HeaderDeadlines.RESOLUTION + 0.1


async def test_finished_requests_are_never_cancelled_and_leave_nothing_behind() -> None:
    deadlines = HeaderDeadlines(0.05)

    async def quick() -> None:
        watch = deadlines.watch()
        await asyncio.sleep(0)
        deadlines.done(watch)
        await asyncio.sleep(0.2)  # well past the deadline: must not be cancelled

    await asyncio.gather(*(quick() for _ in range(100)))
    assert deadlines._buckets == {}


async def test_one_timer_serves_many_requests(monkeypatch: pytest.MonkeyPatch) -> None:
    deadlines = HeaderDeadlines(10)
    loop = asyncio.get_running_loop()
    armed: list[float] = []
    original = loop.call_at

    def counting_call_at(when: float, callback, *args):  # type: ignore[no-untyped-def]
        armed.append(when)
        return original(when, callback, *args)

    monkeypatch.setattr(loop, "call_at", counting_call_at)
    watches = [deadlines.watch() for _ in range(500)]
    assert len(armed) == 1
    for watch in watches:
        deadlines.done(watch)


# -- the exact (httpx) path for header bytes aiohttp would re-encode --------------------------


@respx.mock
async def test_exact_upstream_sends_header_bytes_verbatim_and_streams_the_answer() -> None:
    route = respx.get("http://backend:3000/a%2Fb?q=1").mock(
        return_value=httpx.Response(201, headers=[(b"X-Back", b"\xe9t\xe9")], content=b"body")
    )
    upstream = VerbatimUpstream(connect_timeout=1, max_connections=2)
    response = await upstream.request(
        "GET",
        "http://backend:3000",
        b"/a%2Fb?q=1",
        [(b"host", b"backend:3000"), (b"x-name", b"Jos\xe9")],
        None,
    )
    sent = route.calls.last.request
    assert (b"x-name", b"Jos\xe9") in sent.headers.raw
    assert response.status == 201 and (b"x-back", b"\xe9t\xe9") in response.headers
    body = b""
    while chunk := await response.read():
        body += chunk
    assert body == b"body" and response.at_eof()
    response.close()
    await upstream.aclose()


@respx.mock
@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (httpx.ConnectError("refused"), BadGateway),
        (httpx.ReadError("reset"), BadGateway),
        (httpx.ConnectTimeout("slow"), GatewayTimeout),
    ],
)
async def test_exact_upstream_maps_httpx_errors(error: Exception, expected: type) -> None:
    respx.get("http://backend:3000/x").mock(side_effect=error)
    upstream = VerbatimUpstream(connect_timeout=1, max_connections=2)
    with pytest.raises(expected):
        await upstream.request("GET", "http://backend:3000", b"/x", [(b"host", b"b")], None)
    await upstream.aclose()
