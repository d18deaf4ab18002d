"""The stored response and its versioned byte format.

Layout (network byte order): a fixed header ``_HEAD`` (magic with the format version, status,
flags, the times and freshness facts, the lengths of the variable parts), then the parts:
headers (``name:value`` lines joined by CRLF, which field values cannot contain), body, tags
(LF-joined), vary names and the variant material. Anything that does not decode exactly,
including another format version, is None: a miss.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, replace
from functools import lru_cache

from gateway.cache.policy import Freshness, current_age

MAGIC = b"GWC\x01"  # "gateway cache", format version 1
_HEAD = struct.Struct("!4sHBdddddddIIIII")


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """A stored response: what the origin sent, when, and what RFC 9111 concluded about it."""

    status: int
    headers: list[tuple[bytes, bytes]]  # lowercase names; no Age, no hop-by-hop fields
    body: bytes
    request_time: float  # when the request that produced it was sent (§4.2.3)
    response_time: float  # when its response was received (§4.2.3)
    stored_at: float  # compared with a soft purge time
    freshness: Freshness
    tags: tuple[str, ...] = ()
    vary: str = ""  # normalized Vary names
    variant: bytes = b""  # the request header values the variant was selected by

    def age(self, now: float) -> float:
        """§4.2.3 current_age."""
        return current_age(self.freshness.initial_age, self.response_time, now)

    def with_freshness(self, freshness: Freshness, **changes: object) -> StoredResponse:
        """A copy with new freshness facts and other fields (after a 304, §4.3.4)."""
        return replace(self, freshness=freshness, **changes)  # type: ignore[arg-type]

    def encode(self) -> bytes:
        """The versioned byte form."""
        headers = b"\r\n".join(name + b":" + value for name, value in self.headers)
        tags = "\n".join(self.tags).encode()
        vary = self.vary.encode("latin-1")
        fresh = self.freshness
        head = _HEAD.pack(
            MAGIC,
            self.status,
            fresh.flags,
            self.request_time,
            self.response_time,
            self.stored_at,
            fresh.lifetime,
            fresh.initial_age,
            fresh.stale_while_revalidate,
            fresh.stale_if_error,
            len(headers),
            len(self.body),
            len(tags),
            len(vary),
            len(self.variant),
        )
        return b"".join((head, headers, self.body, tags, vary, self.variant))


#: Hot entries arrive as the same bytes again and again; decoding them once per process saves
#: most of a hit's CPU in this module. Only small blobs are remembered (<= 16 MiB in all), and
#: entries are shared, so nothing may mutate an StoredResponse's header list in place.
_MEMO_MAX_BLOB = 64 * 1024


def decode(blob: bytes | None) -> StoredResponse | None:
    """The entry in ``blob``; None if absent, corrupt or of another format version."""
    if blob is None:
        return None
    return _decode_memo(blob) if len(blob) <= _MEMO_MAX_BLOB else _decode(blob)


@lru_cache(maxsize=256)
def _decode_memo(blob: bytes) -> StoredResponse | None:
    return _decode(blob)


def _decode(blob: bytes) -> StoredResponse | None:
    if len(blob) < _HEAD.size or not blob.startswith(MAGIC):
        return None
    try:
        (
            _,
            status,
            flags,
            request_time,
            response_time,
            stored_at,
            lifetime,
            initial_age,
            swr,
            sie,
            n_headers,
            n_body,
            n_tags,
            n_vary,
            n_variant,
        ) = _HEAD.unpack_from(blob)
        if _HEAD.size + n_headers + n_body + n_tags + n_vary + n_variant != len(blob):
            return None
        view = memoryview(blob)
        position = _HEAD.size
        parts = []
        for length in (n_headers, n_body, n_tags, n_vary, n_variant):
            parts.append(bytes(view[position : position + length]))
            position += length
        raw_headers, body, raw_tags, raw_vary, variant = parts
        headers = []
        if raw_headers:
            for line in raw_headers.split(b"\r\n"):
                name, sep, value = line.partition(b":")
                if not sep:
                    return None
                headers.append((name, value))
        tags = tuple(raw_tags.decode().split("\n")) if raw_tags else ()
        freshness = Freshness(lifetime, initial_age, swr, sie, flags)
        return StoredResponse(
            status,
            headers,
            body,
            request_time,
            response_time,
            stored_at,
            freshness,
            tags,
            raw_vary.decode("latin-1"),
            variant,
        )
    except (struct.error, UnicodeDecodeError, ValueError):
        return None
