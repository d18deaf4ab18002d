"""What teeing a miss into the store holds: a per-worker byte budget, and the task that feeds
the leader's client at its own pace while the upstream answer is read into the store.

Teeing keeps a response's body in memory until it is stored. Without a global bound, many
concurrent large misses (or clients that stop reading) would grow a worker without limit; with
the budget spent, new misses stream through without being stored (Cache-Status
``detail=tee-budget``).
"""

from __future__ import annotations

import asyncio
import contextlib

from starlette.types import Message, Send


class TeeBudget:
    """Bytes this worker may hold for teeing at once. Single-threaded (one event loop): plain
    arithmetic is atomic between awaits."""

    __slots__ = ("limit", "used")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def try_reserve(self, size: int) -> bool:
        """Take ``size`` bytes if they fit; False (and nothing taken) if they do not."""
        if self.used + size > self.limit:
            return False
        self.used += size
        return True

    def release(self, size: int) -> None:
        self.used -= size

    @property
    def exhausted(self) -> bool:
        return self.used >= self.limit


class Feeder:
    """Sends messages to a client, in order, from a task of its own.

    The leader of a collapsed miss reads its upstream answer into the store at the upstream's
    speed, not its client's: a client that reads slowly (or not at all) must not keep the
    collapsing lock, and with it every follower, waiting. The queued chunks are the ones being
    teed (they are counted in the `TeeBudget` until sent), so feeding costs no extra memory.
    """

    __slots__ = ("_queue", "_send", "_task")

    def __init__(self, send: Send) -> None:
        self._send = send
        self._queue: asyncio.Queue[Message | None] = asyncio.Queue()
        self._task = asyncio.create_task(self._run())
        self._task.add_done_callback(_consume)

    async def _run(self) -> None:
        while (message := await self._queue.get()) is not None:
            await self._send(message)

    def put(self, message: Message) -> None:
        """Queue ``message``; dropped if the client's send already failed (it is gone)."""
        if not self._task.done():
            self._queue.put_nowait(message)

    async def close(self) -> None:
        """Wait until every queued message went out; re-raises the client's send error."""
        self._queue.put_nowait(None)
        await self._task

    def cancel(self) -> None:
        self._task.cancel()


def _consume(task: asyncio.Task[None]) -> None:
    with contextlib.suppress(asyncio.CancelledError):
        task.exception()
