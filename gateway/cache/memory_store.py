"""The in-process cache store: the embedded default when no Redis is configured.

Same semantics as the Redis store (variants under one primary key, vary replacement, tags, purge
by url/prefix/tag, soft purge, collapsing locks with a TTL), kept in this worker's memory under a
byte budget: when over it, whole primary keys are evicted, least recently used first. Nothing here
awaits, so every operation is atomic on the event loop.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Iterable, Sequence
from dataclasses import dataclass, field

from gateway.cache.keys import url_of
from gateway.cache.store import MISS, Lookup, Ready, key_matcher
from gateway.types import Clock

# Rough per-object bookkeeping cost, so that many tiny entries still count against the budget.
_OVERHEAD = 200


@dataclass(slots=True)
class _KeyRecord:
    """Everything stored under one primary key: its variants' blobs, tags and soft purge."""

    vary: str
    expires: float
    size: int
    variants: dict[str, bytes] = field(default_factory=dict)
    tags: set[str] = field(default_factory=set)
    purged: float | None = None


class MemoryCacheStore:
    """`CacheStore` in a dict; `clock` returns unix seconds (injectable for tests)."""

    def __init__(self, *, max_bytes: int = 64 * 1024 * 1024, clock: Clock = time.time) -> None:
        self.max_bytes = max_bytes
        self._clock = clock
        self._entries: OrderedDict[str, _KeyRecord] = OrderedDict()
        self._tags: dict[str, set[str]] = {}
        self._locks: dict[str, tuple[str, float]] = {}
        self._lock_sweep_at = 1024
        self._bytes = 0

    @property
    def bytes_used(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, key: str, variant: str) -> Awaitable[Lookup]:
        entry = self._live(key, self._clock())
        if entry is None:
            return Ready(MISS)
        self._entries.move_to_end(key)
        return Ready(Lookup(entry.vary, entry.variants.get(variant), entry.purged))

    async def put(
        self, key: str, variant: str, vary: str, blob: bytes, ttl: float, tags: Sequence[str]
    ) -> None:
        if ttl <= 0:
            return
        now = self._clock()
        entry = self._live(key, now)
        if entry is not None and entry.vary != vary:
            self._drop(key)
            entry = None
        if entry is None:
            entry = _KeyRecord(vary, now + ttl, _OVERHEAD + len(key) + len(vary))
            self._entries[key] = entry
            self._bytes += entry.size
        old = entry.variants.get(variant)
        delta = len(blob) - len(old) if old is not None else _OVERHEAD + len(variant) + len(blob)
        entry.variants[variant] = blob
        for tag in set(tags) - entry.tags:
            entry.tags.add(tag)
            self._tags.setdefault(tag, set()).add(key)
            delta += _OVERHEAD + len(tag)
        entry.size += delta
        self._bytes += delta
        entry.expires = max(entry.expires, now + ttl)
        self._entries.move_to_end(key)
        if entry.size > self.max_bytes:  # can never fit: keep the rest of the cache instead
            self._drop(key)
        while self._bytes > self.max_bytes:
            self._drop(next(iter(self._entries)))

    async def invalidate(self, key: str) -> None:
        if key in self._entries:
            self._drop(key)

    async def try_lock(self, key: str, ttl: float) -> str | None:
        now = self._clock()
        held = self._locks.get(key)
        if held is not None and held[1] > now:
            return None
        token = secrets.token_hex(16)
        self._locks[key] = (token, now + ttl)
        if len(self._locks) > self._lock_sweep_at:
            self._locks = {k: v for k, v in self._locks.items() if v[1] > now}
            self._lock_sweep_at = max(1024, 2 * len(self._locks))
        return token

    async def unlock(self, key: str, token: str) -> None:
        held = self._locks.get(key)
        if held is not None and held[0] == token:
            del self._locks[key]

    async def purge(
        self,
        *,
        url: str | None = None,
        prefix: str | None = None,
        tag: str | None = None,
        soft: bool = False,
    ) -> int:
        kind, value = key_matcher(url, prefix, tag)
        keys: Iterable[str]
        if kind == "tag":
            keys = list(self._tags.get(value, ()))
        elif kind == "url":
            keys = [k for k in self._entries if url_of(k) == value]
        else:
            keys = [k for k in self._entries if k.startswith(value)]
        now = self._clock()
        affected = 0
        for key in keys:
            entry = self._live(key, now)
            if entry is None:
                continue
            affected += 1
            if soft:
                entry.purged = now
            else:
                self._drop(key)
        return affected

    async def ping(self) -> bool:
        return True

    def _live(self, key: str, now: float) -> _KeyRecord | None:
        entry = self._entries.get(key)
        if entry is not None and entry.expires <= now:
            self._drop(key)
            return None
        return entry

    def _drop(self, key: str) -> None:
        entry = self._entries.pop(key)
        self._bytes -= entry.size
        for tag in entry.tags:
            members = self._tags.get(tag)
            if members is not None:
                members.discard(key)
                if not members:
                    del self._tags[tag]
