"""Collapsing concurrent misses onto one upstream request, and background refreshes for
stale-while-revalidate; both coordinated through the store's lock so they hold across processes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from starlette.types import ASGIApp, Message, Scope

from gateway.cache.entry import StoredResponse
from gateway.cache.keys import loggable
from gateway.cache.request import CacheRequest
from gateway.cache.revalidate import revalidate
from gateway.cache.store import CacheStore
from gateway.cache.tee import TeeBudget
from gateway.errors import GatewayError, StoreUnavailable
from gateway.http.cache_control import CacheControl
from gateway.http.request import SCOPE_KEY, request_info

log = logging.getLogger("gateway.cache")

FIRST_POLL = 0.005
MAX_POLL = 0.1


async def wait_for_leader(
    store: CacheStore, request: CacheRequest, fetch: Callable[[], Awaitable[StoredResponse | None]]
) -> StoredResponse | None:
    """Follow the request that holds ``request.key``'s lock: poll (with backoff) until its
    answer is stored and usable, the lock is released without one, or ``lock_timeout`` passes.
    None means: go upstream yourself (a stuck leader never hangs its followers)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + request.settings.lock_timeout
    delay = FIRST_POLL
    while loop.time() < deadline:
        await asyncio.sleep(min(delay, max(0.0, deadline - loop.time())))
        delay = min(delay * 2, MAX_POLL)
        entry = await fetch()
        if entry is not None:
            return entry
        token = await store.try_lock(request.key, request.settings.lock_timeout)
        if token is not None:  # the leader is done; it may have stored just after our look
            await store.unlock(request.key, token)
            return await fetch()
    return None


async def lead_or_follow(
    store: CacheStore, request: CacheRequest, fetch: Callable[[], Awaitable[StoredResponse | None]]
) -> tuple[str | None, StoredResponse | None]:
    """Take the key's lock, or follow its holder: (lock token, usable entry).

    A new leader looks once more before going upstream: the previous leader may have stored
    its answer between our lookup and our lock. Store trouble means neither: go upstream.
    """
    try:
        token = await store.try_lock(request.key, request.settings.lock_timeout)
        if token is None:
            return None, await wait_for_leader(store, request, fetch)
        found = await fetch()
        if found is not None:
            await store.unlock(request.key, token)
            return None, found
        return token, None
    except StoreUnavailable:
        return None, None


class Refresher:
    """Background revalidation for stale-while-revalidate (RFC 5861 §3): at most one per key
    in this process, and one across processes thanks to the store lock."""

    def __init__(self, app: ASGIApp, clock: Callable[[], float], budget: TeeBudget) -> None:
        self.app = app
        self.clock = clock
        self.budget = budget
        self._running: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def schedule(self, scope: Scope, request: CacheRequest, entry: StoredResponse, store: CacheStore) -> None:
        """Refresh ``entry`` in the background unless a refresh of its key is running."""
        if request.key in self._running:
            return
        self._running.add(request.key)
        background = CacheRequest(request.key, "GET", request.headers, request.settings, CacheControl())
        task = asyncio.create_task(self._refresh(_detached(scope), background, entry, store))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _refresh(
        self, scope: Scope, request: CacheRequest, entry: StoredResponse, store: CacheStore
    ) -> None:
        done = asyncio.Event()
        body_sent = False

        async def receive() -> Message:
            nonlocal body_sent
            if not body_sent:
                body_sent = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await done.wait()
            return {"type": "http.disconnect"}

        async def discard(message: Message) -> None:
            return None

        try:
            token = await store.try_lock(request.key, max(request.settings.lock_timeout, 1.0))
            if token is None:
                return  # another process is refreshing it
            try:
                await revalidate(
                    self.app,
                    scope,
                    receive,
                    discard,
                    request,
                    entry,
                    store,
                    self.clock,
                    budget=self.budget,
                )
            finally:
                await store.unlock(request.key, token)
        except (StoreUnavailable, GatewayError) as exc:
            log.debug("background refresh of %s failed: %s", loggable(request.key), exc)
        except Exception:
            log.exception("background refresh of %s failed", loggable(request.key))
        finally:
            done.set()
            self._running.discard(request.key)


def _detached(scope: Scope) -> Scope:
    """A copy of the scope for a request nobody is waiting on."""
    return {**scope, "method": "GET", SCOPE_KEY: request_info(scope).detached()}
