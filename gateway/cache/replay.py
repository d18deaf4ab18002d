"""Answering from storage: replaying a stored response, or a 304 when the client's validators
match it (RFC 9111 §4.3.2), with the cache's own headers (Age, Cache-Status, X-Cache)."""

from __future__ import annotations

from starlette.types import Send

from gateway.cache import validation
from gateway.cache.entry import StoredResponse
from gateway.cache.request import CacheRequest
from gateway.types import Headers


def cache_headers(x_cache: bytes, status: bytes, age: float | None = None) -> list[tuple[bytes, bytes]]:
    """Age (when answering from storage), Cache-Status (RFC 9211) and X-Cache."""
    extra = [(b"cache-status", status), (b"x-cache", x_cache)]
    if age is not None:
        extra.insert(0, (b"age", str(int(age)).encode()))
    return extra


async def send_entry(
    send: Send,
    entry: StoredResponse,
    request: CacheRequest,
    *,
    now: float,
    x_cache: bytes,
    status: bytes,
    conditional: bool = True,
    own: Headers = (),
) -> None:
    """Answer from storage: the stored response, or a 304 when the request's validators match
    (RFC 9111 §4.3.2). The stored Date is replayed and Age computed (§4.2.3). ``own`` are fields
    meant for this client only (a Set-Cookie that came with its revalidation)."""
    age = entry.age(now)
    extra = [*own, *cache_headers(x_cache, status, age)]
    if (
        conditional
        and _is_conditional(request.headers)
        and validation.not_modified(request.headers, entry.headers, entry.response_time, now)
    ):
        headers = validation.not_modified_headers(entry.headers) + extra
        await send({"type": "http.response.start", "status": 304, "headers": headers})
        await send({"type": "http.response.body", "body": b""})
        return
    await send({"type": "http.response.start", "status": entry.status, "headers": entry.headers + extra})
    body = b"" if request.method == "HEAD" else entry.body
    await send({"type": "http.response.body", "body": body})


def _is_conditional(headers: Headers) -> bool:
    return any(name in (b"if-none-match", b"if-modified-since") for name, _ in headers)
