"""Auto-pipelining: the Redis commands of concurrent requests share one write and one read.

redis-py spends ~150-200 µs of CPU per command round trip; most of it is per-call overhead, not
per-command work (measured; docs/design.md). Commands issued during one event-loop tick are therefore queued
and sent as a single non-transactional pipeline on the next tick; each caller awaits its own
future. A deadline bounds every flush and a circuit breaker stops paying that deadline on every
request while Redis is down. Every failure surfaces as `StoreUnavailable`.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from typing import Any

import hiredis
from redis.asyncio import Redis, RedisCluster
from redis.exceptions import NoScriptError, ResponseError

from gateway.breaker import CircuitBreaker
from gateway.errors import StoreUnavailable
from gateway.lua import LuaScript
from gateway.redis_errors import REDIS_ERRORS, error_reply, unavailable

Arg = str | bytes | int | float


_Pending = tuple[tuple[Arg, ...], "asyncio.Future[Any]", LuaScript | None]


class AutoPipeline:
    """Queue commands during one tick, send them as one pipeline, resolve each caller's future."""

    def __init__(
        self,
        client: Redis | RedisCluster,
        *,
        timeout: float = 0.25,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self.client = client
        self.timeout = timeout
        self.breaker = breaker or CircuitBreaker()
        self._queue: list[_Pending] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.flushes = 0
        self.commands = 0

    def execute(self, *args: Arg) -> asyncio.Future[Any]:
        return self._enqueue(args, None)

    def evalsha(
        self, script: LuaScript, keys: Sequence[str | bytes], args: Sequence[Arg]
    ) -> asyncio.Future[Any]:
        return self._enqueue(("EVALSHA", script.sha, len(keys), *keys, *args), script)

    def _enqueue(self, args: tuple[Arg, ...], script: LuaScript | None) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if not self.breaker.allow():
            future.set_exception(StoreUnavailable("redis circuit open"))
            return future
        if not self._queue:
            loop.call_soon(self._flush)
        self._queue.append((args, future, script))
        return future

    def _flush(self) -> None:
        batch, self._queue = self._queue, []
        task = asyncio.get_running_loop().create_task(self._send(batch))
        self._tasks.add(task)  # keep a reference until done (asyncio holds only weak ones)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[_Pending]) -> None:
        self.flushes += 1
        self.commands += len(batch)
        try:
            async with asyncio.timeout(self.timeout):
                replies = await self._run(batch)
                retry = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
                if retry:  # first use of a script on this server: EVAL loads it
                    again = [(_as_eval(batch[i]), batch[i][1], None) for i in retry]
                    for i, reply in zip(retry, await self._run(again), strict=True):
                        replies[i] = reply
        except REDIS_ERRORS as exc:  # uncaught, any of them would cancel every caller
            self.breaker.failure()
            failure = unavailable(exc)
            for _, future, _ in batch:
                if not future.done():
                    future.set_exception(failure)
            return
        except BaseException:
            for _, future, _ in batch:
                if not future.done():
                    future.cancel()
            raise
        self.breaker.success()
        for (_, future, _), reply in zip(batch, replies, strict=True):
            if future.done():
                continue
            if isinstance(reply, ResponseError):
                future.set_exception(error_reply(reply))
            else:
                future.set_result(reply)

    async def _run(self, batch: Sequence[_Pending]) -> list[Any]:
        if isinstance(self.client, RedisCluster):
            # The cluster pipeline splits the batch by slot owner and follows MOVED/ASK.
            async with self.client.pipeline(transaction=False) as pipe:
                for args, _, _ in batch:
                    pipe.execute_command(*args)
                return list(await pipe.execute(raise_on_error=False))
        # Standalone/Sentinel: one connection, one write of commands packed in C by hiredis,
        # then one reply per command. redis-py's Pipeline packs each argument in Python, which
        # was the largest Redis cost per request in profiles.
        pool = self.client.connection_pool
        callbacks = self.client.response_callbacks
        conn = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            await conn.send_packed_command([hiredis.pack_command(args) for args, _, _ in batch])  # type: ignore[arg-type]
            replies: list[Any] = []
            for args, _, _ in batch:
                try:
                    # No per-read timer: the flush's own deadline bounds the whole batch (a
                    # timer per reply was the largest Redis cost left in profiles).
                    reply = await conn.read_response(timeout=math.inf)
                except ResponseError as exc:  # an error reply belongs to its own command
                    replies.append(exc)
                    continue
                # The same reply shapes as redis-py's own commands (and the cluster path).
                callback = callbacks.get(str(args[0]).upper())
                replies.append(callback(reply) if callback is not None else reply)
            return replies
        except BaseException:
            # A half-read connection must never go back to the pool.
            await conn.disconnect(nowait=True)
            raise
        finally:
            await pool.release(conn)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        self._tasks.clear()


def _as_eval(item: _Pending) -> tuple[Arg, ...]:
    args, _, script = item
    assert script is not None
    return ("EVAL", script.source, *args[2:])
