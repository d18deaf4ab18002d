"""The one boundary where redis-py's failures become the gateway's `StoreUnavailable`.

Every Redis adapter (the auto-pipeline, the cache store's purge on the plain client) catches
`REDIS_ERRORS` and raises or hands out what these functions return; nothing above the adapters
sees a redis-py exception.
"""

from __future__ import annotations

from redis.exceptions import RedisClusterException, RedisError, ResponseError

from gateway.errors import StoreUnavailable

#: What a Redis call raises when the store cannot answer. RedisClusterException is not a
#: RedisError (Cluster unreachable at start-up, no node for a slot, a cross-slot command);
#: OSError and TimeoutError come from sockets and from the caller's own deadline.
REDIS_ERRORS = (RedisError, RedisClusterException, OSError, TimeoutError)


def unavailable(exc: BaseException) -> StoreUnavailable:
    """A Redis call that raised: only the exception's type is kept (its text may name hosts)."""
    return StoreUnavailable(f"redis unavailable: {type(exc).__name__}")


def error_reply(reply: ResponseError) -> StoreUnavailable:
    """One command's error reply in a call that succeeded: the server's text is kept (the cache
    store reads WRONGTYPE from it)."""
    return StoreUnavailable(f"redis error reply: {reply}")
