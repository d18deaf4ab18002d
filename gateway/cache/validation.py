"""Validation: answering conditional requests from storage, revalidating stored responses with
the origin, and freshening them from a 304 (RFC 9111 §4.3; RFC 9110 §8.8, §13, §15.4.5).

Pure: no I/O, no clock.
"""

from __future__ import annotations

import re

from gateway.http.dates import parse_http_date
from gateway.http.fields import combined, header, without
from gateway.http.headers import HOP_BY_HOP, connection_tokens
from gateway.types import Headers

#: RFC 9110 §13.1: request preconditions. The cache evaluates If-None-Match and
#: If-Modified-Since itself; requests with the others are forwarded (see `CACHE_BYPASS_HEADERS`).
CONDITIONAL_HEADERS = frozenset(
    {b"if-none-match", b"if-modified-since", b"if-match", b"if-unmodified-since", b"if-range"}
)
#: Requests the cache does not answer from storage: other preconditions and ranges.
CACHE_BYPASS_HEADERS = frozenset({b"if-match", b"if-unmodified-since", b"if-range", b"range"})
#: RFC 9110 §15.4.5: fields a 304 carries when the 200 would have.
NOT_MODIFIED_FIELDS = (
    b"cache-control",
    b"content-location",
    b"date",
    b"etag",
    b"expires",
    b"vary",
)
#: RFC 9111 §3.1-§3.2: hop-by-hop fields are never copied from a 304 into the stored response.
#: Set-Cookie is for the client that revalidated, never for the shared entry.
FRESHEN_EXCLUDED = HOP_BY_HOP | {
    b"content-length",
    b"age",
    b"x-cache",
    b"cache-status",
    b"set-cookie",
    b"set-cookie2",
    # §3.2 lets a cache keep fields that describe the stored body as it is, so that a 304
    # can never make the stored metadata disagree with the stored bytes.
    b"content-encoding",
    b"content-range",
    b"content-md5",
    b"etag",
}

_ETAG = re.compile(rb'\s*(W/)?("[^"]*")\s*(?:,|$)')


def entity_tags(value: bytes) -> list[tuple[bool, bytes]]:
    """An entity-tag list (RFC 9110 §8.8.3) as (weak, opaque-tag) pairs; junk is skipped."""
    found: list[tuple[bool, bytes]] = []
    position = 0
    while position < len(value):
        match = _ETAG.match(value, position)
        if match is None:
            next_comma = value.find(b",", position)
            if next_comma < 0:
                break
            position = next_comma + 1
            continue
        found.append((match.group(1) is not None, match.group(2)))
        position = match.end()
    return found


def weak_match(a: bytes, b: bytes) -> bool:
    """RFC 9110 §8.8.3.2 weak comparison: the opaque tags are equal, W/ ignored."""
    tags_a, tags_b = entity_tags(a), entity_tags(b)
    return bool(tags_a and tags_b) and tags_a[0][1] == tags_b[0][1]


def strong_match(a: bytes, b: bytes) -> bool:
    """RFC 9110 §8.8.3.2 strong comparison: neither weak and the opaque tags equal."""
    tags_a, tags_b = entity_tags(a), entity_tags(b)
    return bool(tags_a and tags_b) and not tags_a[0][0] and not tags_b[0][0] and tags_a[0][1] == tags_b[0][1]


def last_modified(stored: Headers, response_time: float) -> float:
    """RFC 9111 §4.3.2: the stored Last-Modified, else its Date, else when it was received."""
    for name in (b"last-modified", b"date"):
        value = parse_http_date(header(stored, name))
        if value is not None:
            return value
    return response_time


def not_modified(request: Headers, stored: Headers, response_time: float, now: float) -> bool:
    """RFC 9111 §4.3.2 with RFC 9110 §13.1.2-§13.1.3, §13.2.2: may a GET/HEAD be answered 304?

    If-None-Match (weak comparison) takes precedence; If-Modified-Since is evaluated only
    without it, against a valid date not in the future.
    """
    if_none_match = combined(request, b"if-none-match")
    if if_none_match is not None:
        if if_none_match.strip() == b"*":
            return True
        etag = header(stored, b"etag")
        if etag is None:
            return False
        stored_tag = entity_tags(etag)
        if not stored_tag:
            return False
        return any(tag == stored_tag[0][1] for _, tag in entity_tags(if_none_match))
    since = parse_http_date(header(request, b"if-modified-since"))
    if since is None or since > now:
        return False
    return last_modified(stored, response_time) <= since


def not_modified_headers(stored: Headers) -> list[tuple[bytes, bytes]]:
    """RFC 9110 §15.4.5: the stored fields a 304 sends (Last-Modified only without an ETag)."""
    names = set(NOT_MODIFIED_FIELDS)
    if header(stored, b"etag") is None:
        names.add(b"last-modified")
    return [(name, value) for name, value in stored if name in names]


def revalidation_headers(request: Headers, stored: Headers) -> list[tuple[bytes, bytes]]:
    """§4.3.1: the client's headers with its preconditions replaced by the stored validators."""
    forwarded = without(request, CONDITIONAL_HEADERS)
    etag = header(stored, b"etag")
    if etag is not None:
        forwarded.append((b"if-none-match", etag))
    modified = header(stored, b"last-modified")
    if modified is not None:
        forwarded.append((b"if-modified-since", modified))
    return forwarded


def selects_stored(stored: Headers, fresh_304: Headers) -> bool:
    """§4.3.4: does a 304 identify this stored response? A strong ETag must match strongly,
    a weak one weakly; without an ETag, a differing Last-Modified does not select it."""
    new_etag = header(fresh_304, b"etag")
    old_etag = header(stored, b"etag")
    if new_etag is not None:
        if old_etag is None:
            return False
        new_tags = entity_tags(new_etag)
        if new_tags and not new_tags[0][0]:
            return strong_match(new_etag, old_etag)
        return weak_match(new_etag, old_etag)
    new_modified = header(fresh_304, b"last-modified")
    old_modified = header(stored, b"last-modified")
    if new_modified is not None and old_modified is not None:
        return parse_http_date(new_modified) == parse_http_date(old_modified)
    return True


def freshen(stored: Headers, fresh_304: Headers) -> list[tuple[bytes, bytes]]:
    """§3.2 / §4.3.4: replace stored fields with those of the 304, except framing, hop-by-hop
    and Connection-named fields."""
    excluded = FRESHEN_EXCLUDED | connection_tokens(fresh_304)
    updates = [(name.lower(), value) for name, value in fresh_304 if name.lower() not in excluded]
    replaced = {name for name, _ in updates}
    return [(name, value) for name, value in stored if name not in replaced] + updates
