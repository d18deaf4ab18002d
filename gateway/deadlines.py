"""A shared deadline for requests waiting on upstream response headers."""

from __future__ import annotations

import asyncio
import math


class Watch:
    __slots__ = ("expired", "slot", "task")

    def __init__(self, task: asyncio.Task[object] | None, slot: int) -> None:
        self.task = task
        self.slot = slot
        self.expired = False


class HeaderDeadlines:
    """Cancels requests still waiting for upstream headers past a fixed timeout.

    One timer for all requests instead of one per request: under uvloop each
    `asyncio.timeout` arms and disarms its own libuv timer, which measured ~15 % of a
    pass-through request's CPU. Deadlines fall into 50 ms buckets; a single timer wakes at the
    earliest bucket, so the deadline is honoured to within 50 ms.
    """

    RESOLUTION = 0.05

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._buckets: dict[int, set[Watch]] = {}
        self._timer: asyncio.TimerHandle | None = None

    def watch(self, task: asyncio.Task[object] | None = None) -> Watch:
        """Start the deadline for `task` (default: the current task)."""
        loop = asyncio.get_running_loop()
        slot = math.ceil((loop.time() + self.timeout) / self.RESOLUTION)
        watch = Watch(task or asyncio.current_task(), slot)
        bucket = self._buckets.get(slot)
        if bucket is None:
            self._buckets[slot] = bucket = set()
        bucket.add(watch)
        if self._timer is None:
            self._timer = loop.call_at(slot * self.RESOLUTION, self._expire)
        return watch

    def done(self, watch: Watch) -> None:
        bucket = self._buckets.get(watch.slot)
        if bucket is not None:
            bucket.discard(watch)
            if not bucket:
                del self._buckets[watch.slot]
        watch.task = None

    def _expire(self) -> None:
        loop = asyncio.get_running_loop()
        now_slot = loop.time() / self.RESOLUTION
        for slot in [s for s in self._buckets if s <= now_slot]:
            for watch in self._buckets.pop(slot):
                watch.expired = True
                if watch.task is not None:
                    watch.task.cancel()
        self._timer = (
            loop.call_at(min(self._buckets) * self.RESOLUTION, self._expire) if self._buckets else None
        )
