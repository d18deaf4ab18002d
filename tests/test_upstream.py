"""The upstream adapter's shared header deadline."""

from __future__ import annotations

import asyncio
import time

import pytest

from gateway.upstream import HeaderDeadlines


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
