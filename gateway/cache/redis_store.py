"""The cache store on Redis (standalone, Sentinel or Cluster).

Layout, format version ``c2`` in every key (``c1`` keys, whose fields were joined unescaped,
are never read and expire on their own); one primary key's keys share a hash tag so every
script touches a single Cluster slot:

- ``gw:c2:{<key>}``       hash: ``vary``, ``v:<variant>`` (one blob each), ``purged`` (soft-purge
  time from Redis TIME), and ``k`` (the full key, only when the name had to be shortened)
- ``gw:c2:{<key>}:lock``  collapsing lock (a random token, SET NX PX)
- ``gw:c2:tag:{<tag>}``   set of entry hash names stored with that tag

Keys longer than 200 characters are named ``key[:160] + "#" + sha1(key)``. Every key expires.
The hot path (lookup) and the writes go through the shared `AutoPipeline`; purge scans with the
plain client. Every Redis failure leaves this module as `StoreUnavailable`.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterable, Sequence
from typing import Any

from redis.asyncio import RedisCluster

from gateway.autopipeline import AutoPipeline
from gateway.cache.keys import url_of
from gateway.cache.store import MISS, Lookup, key_matcher
from gateway.errors import StoreUnavailable
from gateway.lua import load_script
from gateway.redis_client import RedisClient
from gateway.redis_errors import REDIS_ERRORS, unavailable

PREFIX = "gw:c2:"  # c2: escaped key fields (c1 keys joined raw fields; never read)
_ENTRY_OPEN = PREFIX + "{"
_MAX_INNER = 200
_SHORT_INNER = 160
_HASHED_LEN = _SHORT_INNER + 1 + 40
_GLOB_SPECIAL = re.compile(r"([*?\[\]\\])")
_BATCH = 500

_PUT = load_script("gateway.cache", "put.lua")
_TAG = load_script("gateway.cache", "tag.lua")
_UNLOCK = load_script("gateway.cache", "unlock.lua")
_SOFT_PURGE = load_script("gateway.cache", "soft_purge.lua")


def _inner(key: str) -> str:
    if len(key) > _MAX_INNER:
        digest = hashlib.sha1(key.encode(), usedforsecurity=False).hexdigest()
        return f"{key[:_SHORT_INNER]}#{digest}"
    return key


def entry_name(key: str) -> str:
    return f"{_ENTRY_OPEN}{_inner(key)}}}"


def lock_name(key: str) -> str:
    return f"{_ENTRY_OPEN}{_inner(key)}}}:lock"


def tag_name(tag: str) -> str:
    return f"{PREFIX}tag:{{{tag}}}"


def _glob_escape(text: str) -> str:
    return _GLOB_SPECIAL.sub(r"\\\1", text)


def _ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _parse_lookup(reply: Any) -> Lookup:
    """HMGET vary v:<variant> purged -> Lookup; any malformed part reads as absent."""
    if not isinstance(reply, list) or len(reply) != 3:
        return MISS
    vary, blob, purged = reply
    if not isinstance(vary, bytes):
        return Lookup(None, None, _float(purged))
    try:
        vary_text = vary.decode("ascii")
    except UnicodeDecodeError:
        return Lookup(None, None, _float(purged))
    return Lookup(vary_text, blob if isinstance(blob, bytes) else None, _float(purged))


def _wrong_type(exc: BaseException) -> bool:
    return "WRONGTYPE" in str(exc)


class _PendingLookup:
    """Awaitable result of an HMGET already queued on the auto-pipeline."""

    __slots__ = ("_future",)

    def __init__(self, future: asyncio.Future[Any]) -> None:
        self._future = future

    def __await__(self) -> Generator[Any, None, Lookup]:
        try:
            reply = yield from self._future.__await__()
        except StoreUnavailable as exc:
            if _wrong_type(exc):  # a foreign or old value under our name: a miss; put replaces it
                return MISS
            raise
        return _parse_lookup(reply)


class RedisCacheStore:
    """`CacheStore` on Redis; see the module docstring for the key layout."""

    def __init__(self, redis: RedisClient, pipeline: AutoPipeline, *, scan_count: int = 1000):
        self._redis = redis
        self._pipeline = pipeline
        self._scan_count = scan_count

    def lookup(self, key: str, variant: str) -> Awaitable[Lookup]:
        future = self._pipeline.execute("HMGET", entry_name(key), "vary", "v:" + variant, "purged")
        future.add_done_callback(_consume)  # a prefetched lookup may never be awaited
        return _PendingLookup(future)

    async def put(
        self, key: str, variant: str, vary: str, blob: bytes, ttl: float, tags: Sequence[str]
    ) -> None:
        if ttl <= 0:
            return
        name, ms = entry_name(key), _ms(ttl)
        full = key if len(key) > _MAX_INNER else ""
        futures = [self._pipeline.evalsha(_PUT, [name], [vary, "v:" + variant, blob, ms, full])]
        futures += [self._pipeline.evalsha(_TAG, [tag_name(t)], [name, ms]) for t in set(tags)]
        for future in futures:  # all queued in this tick: one flush, one round trip
            future.add_done_callback(_consume)
        for future in futures:
            await future

    async def invalidate(self, key: str) -> None:
        await self._pipeline.execute("UNLINK", entry_name(key))

    async def try_lock(self, key: str, ttl: float) -> str | None:
        token = secrets.token_hex(16)
        reply = await self._pipeline.execute("SET", lock_name(key), token, "NX", "PX", _ms(ttl))
        return token if reply in (True, b"OK", "OK") else None

    async def unlock(self, key: str, token: str) -> None:
        await self._pipeline.evalsha(_UNLOCK, [lock_name(key)], [token])

    async def ping(self) -> bool:
        try:
            return bool(await self._pipeline.execute("PING"))
        except StoreUnavailable:
            return False

    async def purge(
        self,
        *,
        url: str | None = None,
        prefix: str | None = None,
        tag: str | None = None,
        soft: bool = False,
    ) -> int:
        kind, value = key_matcher(url, prefix, tag)
        try:
            if kind == "tag":
                return await self._purge_tag(value, soft)
            return await self._purge_scan(kind, value, soft)
        except REDIS_ERRORS as exc:
            raise unavailable(exc) from exc

    async def _purge_scan(self, kind: str, value: str, soft: bool) -> int:
        # A shortened name holds only the first 160 characters of its key: match on those and
        # confirm against the full key, read from the hash, when the name cannot decide.
        wanted = value + "|" if kind == "url" else value
        pattern = f"{_ENTRY_OPEN}{_glob_escape(wanted[:_SHORT_INNER])}*"

        def matches(key: str) -> bool:
            return url_of(key) == value if kind == "url" else key.startswith(value)

        affected, batch = 0, []
        async for name in self._scan(pattern):
            batch.append(name)
            if len(batch) >= _BATCH:
                affected += await self._apply(await self._select(batch, matches), soft)
                batch = []
        if batch:
            affected += await self._apply(await self._select(batch, matches), soft)
        return affected

    async def _select(self, names: list[str], matches: Callable[[str], bool]) -> list[str]:
        chosen, unsure = [], []
        for name in names:
            if not name.endswith("}"):
                continue  # a lock
            inner = name[len(_ENTRY_OPEN) : -1]
            if len(inner) == _HASHED_LEN and inner[_SHORT_INNER] == "#":
                unsure.append(name)
            elif matches(inner):
                chosen.append(name)
        if unsure:
            async with self._redis.pipeline(transaction=False) as pipe:
                for name in unsure:
                    pipe.execute_command("HGET", name, "k")
                full_keys = await pipe.execute(raise_on_error=False)
            for name, full in zip(unsure, full_keys, strict=True):
                if isinstance(full, bytes | str) and matches(_text(full)):
                    chosen.append(name)
        return chosen

    async def _purge_tag(self, tag: str, soft: bool) -> int:
        members = await self._redis.smembers(tag_name(tag))
        names = sorted(_text(m) for m in members if _text(m).startswith(_ENTRY_OPEN))
        affected = 0
        for start in range(0, len(names), _BATCH):
            affected += await self._apply(names[start : start + _BATCH], soft)
        if not soft:
            await self._redis.unlink(tag_name(tag))
        return affected

    async def _apply(self, names: Iterable[str], soft: bool) -> int:
        """UNLINK (or soft-mark) each name separately: on Cluster they live in different slots.

        Commands go through `execute_command`: a Cluster pipeline's multi-key helpers (`unlink`)
        are coroutines, not queued commands.
        """
        names = list(names)
        if not names:
            return 0
        async with self._redis.pipeline(transaction=False) as pipe:
            for name in names:
                if soft:
                    pipe.execute_command("EVAL", _SOFT_PURGE.source, 1, name)
                else:
                    pipe.execute_command("UNLINK", name)
            replies = await pipe.execute()
        return sum(1 for reply in replies if reply == 1)

    async def _scan(self, pattern: str) -> AsyncIterator[str]:
        """SCAN every primary: a Cluster's keys are spread over all of them."""
        if isinstance(self._redis, RedisCluster):
            for node in self._redis.get_primaries():
                async for name in self._redis.scan_iter(
                    match=pattern, count=self._scan_count, target_nodes=node
                ):
                    yield _text(name)
        else:
            async for name in self._redis.scan_iter(match=pattern, count=self._scan_count):
                yield _text(name)


def _consume(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()
