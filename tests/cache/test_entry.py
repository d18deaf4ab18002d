"""The stored entry's byte format, and validation (RFC 9110 §13, RFC 9111 §4.3)."""

from __future__ import annotations

import pytest

from gateway.cache import validation
from gateway.cache.entry import MAGIC, StoredResponse, decode
from gateway.cache.policy import Freshness
from gateway.http.dates import format_http_date

NOW = 1_700_000_000.0


def entry(**changes: object) -> StoredResponse:
    values: dict[str, object] = {
        "status": 200,
        "headers": [(b"content-type", b"text/plain; a=b:c"), (b"etag", b'"v1"')],
        "body": b"hello \r\n world",
        "request_time": NOW - 1,
        "response_time": NOW,
        "stored_at": NOW,
        "freshness": Freshness(60.0, 1.0, 5.0, 10.0, 3),
        "tags": ("a", "b"),
        "vary": "accept",
        "variant": b"accept:text/html",
    }
    values.update(changes)
    return StoredResponse(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "original",
    [
        entry(),
        entry(headers=[], body=b"", tags=(), vary="", variant=b""),
        entry(body=bytes(range(256)) * 100, headers=[(b"x", b"\xff\xfe")]),
    ],
)
def test_round_trip(original: StoredResponse) -> None:
    assert decode(original.encode()) == original


@pytest.mark.parametrize(
    "blob",
    [
        None,
        b"",
        b"garbage",
        MAGIC,
        b"GWC\x00" + entry().encode()[4:],
        entry().encode()[:-1],
        entry().encode() + b"x",
    ],
)
def test_old_or_corrupt_blobs_are_misses(blob: bytes | None) -> None:
    assert decode(blob) is None


def test_age() -> None:
    assert entry().age(NOW + 10) == 11


# -- RFC 9110 §13.1-§13.2 conditional requests answered from storage ------------------------

STORED = [
    (b"etag", b'W/"v1"'),
    (b"last-modified", format_http_date(NOW - 100)),
    (b"date", format_http_date(NOW)),
]


@pytest.mark.parametrize(
    ("request_headers", "expected"),
    [
        ([(b"if-none-match", b'"v1"')], True),  # weak comparison
        ([(b"if-none-match", b'W/"v1"')], True),
        ([(b"if-none-match", b'"x", W/"v1"')], True),
        ([(b"if-none-match", b"*")], True),
        ([(b"if-none-match", b'"v2"')], False),
        # If-None-Match takes precedence: If-Modified-Since is not evaluated.
        ([(b"if-none-match", b'"v2"'), (b"if-modified-since", format_http_date(NOW))], False),
        ([(b"if-modified-since", format_http_date(NOW - 100))], True),
        ([(b"if-modified-since", format_http_date(NOW - 101))], False),
        ([(b"if-modified-since", b"not a date")], False),
        ([(b"if-modified-since", format_http_date(NOW + 999))], False),  # future: ignored
        ([], False),
    ],
)
def test_not_modified(request_headers: list[tuple[bytes, bytes]], expected: bool) -> None:
    assert validation.not_modified(request_headers, STORED, NOW, NOW + 1) is expected


def test_if_modified_since_falls_back_to_date() -> None:
    stored = [(b"date", format_http_date(NOW - 50))]
    since = [(b"if-modified-since", format_http_date(NOW - 50))]
    assert validation.not_modified(since, stored, NOW, NOW)


def test_not_modified_headers() -> None:
    """RFC 9110 §15.4.5."""
    stored = [
        (b"content-type", b"text/plain"),
        (b"etag", b'"1"'),
        (b"cache-control", b"max-age=1"),
        (b"content-length", b"5"),
        (b"last-modified", b"x"),
    ]
    assert validation.not_modified_headers(stored) == [(b"etag", b'"1"'), (b"cache-control", b"max-age=1")]
    assert (b"last-modified", b"x") in validation.not_modified_headers(stored[3:])


def test_revalidation_headers_use_stored_validators() -> None:
    """RFC 9111 §4.3.1."""
    request = [(b"accept", b"*/*"), (b"if-none-match", b'"client"'), (b"if-match", b'"x"')]
    headers = validation.revalidation_headers(request, STORED)
    assert headers == [
        (b"accept", b"*/*"),
        (b"if-none-match", b'W/"v1"'),
        (b"if-modified-since", STORED[1][1]),
    ]


@pytest.mark.parametrize(
    ("stored", "response", "expected"),
    [
        ([(b"etag", b'"a"')], [(b"etag", b'"a"')], True),
        ([(b"etag", b'"a"')], [(b"etag", b'"b"')], False),
        ([(b"etag", b'W/"a"')], [(b"etag", b'"a"')], False),  # strong needs strong
        ([(b"etag", b'W/"a"')], [(b"etag", b'W/"a"')], True),
        ([], [(b"etag", b'"a"')], False),
        (
            [(b"last-modified", b"Sun, 06 Nov 1994 08:49:37 GMT")],
            [(b"last-modified", b"Sun, 06 Nov 1994 08:49:38 GMT")],
            False,
        ),
        ([(b"etag", b'"a"')], [], True),
    ],
)
def test_304_selects_stored_response(
    stored: list[tuple[bytes, bytes]], response: list[tuple[bytes, bytes]], expected: bool
) -> None:
    """RFC 9111 §4.3.4."""
    assert validation.selects_stored(stored, response) is expected


def test_freshen_replaces_fields_but_not_framing() -> None:
    """RFC 9111 §3.2 / §4.3.4."""
    stored = [
        (b"content-type", b"text/plain"),
        (b"content-length", b"5"),
        (b"cache-control", b"max-age=1"),
        (b"x-a", b"old"),
    ]
    update = [
        (b"Cache-Control", b"max-age=60"),
        (b"content-length", b"0"),
        (b"x-a", b"new"),
        (b"connection", b"x-hop"),
        (b"x-hop", b"1"),
        (b"x-new", b"1"),
        (b"transfer-encoding", b"chunked"),
    ]
    assert validation.freshen(stored, update) == [
        (b"content-type", b"text/plain"),
        (b"content-length", b"5"),
        (b"cache-control", b"max-age=60"),
        (b"x-a", b"new"),
        (b"x-new", b"1"),
    ]


def test_freshen_keeps_the_fields_that_describe_the_stored_body() -> None:
    """RFC 9111 §3.2: a 304 never makes the stored metadata disagree with the stored bytes."""
    stored = [
        (b"content-encoding", b"gzip"),
        (b"etag", b'"a"'),
        (b"content-range", b"bytes 0-1/2"),
        (b"content-md5", b"x"),
    ]
    update = [
        (b"content-encoding", b"br"),
        (b"etag", b'"b"'),
        (b"content-range", b"bytes 0-0/1"),
        (b"content-md5", b"y"),
        (b"expires", b"later"),
    ]
    assert validation.freshen(stored, update) == [*stored, (b"expires", b"later")]
