"""Hop-by-hop stripping and forwarding headers (RFC 9110 §7.6)."""

from __future__ import annotations

from gateway.http.headers import (
    FORWARDING_FAMILY,
    forward_request_headers,
    response_headers,
    strip_hop_by_hop,
)


def test_strip_removes_standard_and_connection_named_fields() -> None:
    headers = [
        (b"Connection", b"keep-alive, X-Private"),
        (b"X-Private", b"1"),
        (b"Keep-Alive", b"timeout=5"),
        (b"TE", b"trailers"),
        (b"Upgrade", b"h2c"),
        (b"Proxy-Authorization", b"Basic x"),
        (b"Accept", b"*/*"),
    ]
    assert strip_hop_by_hop(headers) == [(b"accept", b"*/*")]


def forward(
    headers: list[tuple[bytes, bytes]],
    trusted: bool = False,
    scheme: bytes = b"http",
    allowed: frozenset[bytes] = frozenset(),
) -> dict[bytes, bytes]:
    chain = b"198.51.100.1, 10.0.0.2" if trusted else b"10.0.0.2"
    out = forward_request_headers(
        headers,
        trusted_peer=trusted,
        forwarded_for=chain,
        scheme=scheme,
        host=b"shop.example",
        request_id=b"rid",
        allowed=allowed,
    )
    names = [k for k, _ in out]
    assert len(names) == len(set(names)), "a forwarding field was duplicated"
    return dict(out)


def test_untrusted_peer_cannot_inject_forwarding_fields() -> None:
    out = forward(
        [
            (b"x-forwarded-for", b"1.1.1.1"),
            (b"x-forwarded-host", b"evil"),
            (b"x-forwarded-proto", b"https"),
            (b"forwarded", b"for=1.1.1.1"),
            (b"x-real-ip", b"1.1.1.1"),
            (b"host", b"shop.example"),
        ]
    )
    assert out[b"x-forwarded-for"] == b"10.0.0.2"
    assert out[b"x-forwarded-host"] == b"shop.example"
    assert out[b"x-forwarded-proto"] == b"http"
    assert b"forwarded" not in out and b"x-real-ip" not in out
    assert b"host" not in out  # the proxy adds the upstream's own
    assert out[b"via"] == b"1.1 gateway" and out[b"x-request-id"] == b"rid"


def test_trusted_peer_keeps_proto_and_the_verified_chain_only() -> None:
    out = forward(
        [
            (b"x-forwarded-for", b"6.6.6.6"),
            (b"x-forwarded-for", b"198.51.100.1"),
            (b"x-forwarded-proto", b"https"),
            (b"via", b"1.0 edge"),
            (b"x-real-ip", b"198.51.100.1"),
            (b"x-original-url", b"/admin"),
        ],
        trusted=True,
        scheme=b"https",
    )  # the context layer read the proto
    assert out[b"x-forwarded-for"] == b"198.51.100.1, 10.0.0.2"  # as resolved, never as sent
    assert out[b"x-forwarded-proto"] == b"https"
    assert out[b"via"] == b"1.0 edge, 1.1 gateway"
    assert out[b"x-real-ip"] == b"198.51.100.1"  # a standard field a trusted proxy may send
    assert b"x-original-url" not in out  # an override field: never from anyone


def test_every_forwarding_and_override_field_is_dropped_from_an_untrusted_peer() -> None:
    family = [(name, b"evil") for name in sorted(FORWARDING_FAMILY)]
    family += [
        (b"x-forwarded-port", b"1"),
        (b"x-forwarded-prefix", b"/evil"),
        (b"x-forwarded-anything-new", b"evil"),
    ]
    out = forward([*family, (b"accept", b"*/*")])
    assert b"evil" not in out.values()
    assert out[b"accept"] == b"*/*"


def test_underscore_names_are_dropped_unless_the_route_allows_them() -> None:
    out = forward([(b"x_forwarded_for", b"6.6.6.6"), (b"x-api_key", b"k")])
    assert b"x_forwarded_for" not in out and b"x-api_key" not in out
    allowed = forward(
        [(b"x-api_key", b"k"), (b"x-forwarded-prefix", b"/shop")],
        allowed=frozenset({b"x-api_key", b"x-forwarded-prefix"}),
    )
    assert allowed[b"x-api_key"] == b"k" and allowed[b"x-forwarded-prefix"] == b"/shop"


def test_client_content_length_and_expect_are_not_copied() -> None:
    out = forward([(b"content-length", b"5"), (b"expect", b"100-continue")])
    assert b"content-length" not in out and b"expect" not in out


def test_response_headers_strip_hop_by_hop_and_add_via() -> None:
    out = response_headers(
        [
            (b"connection", b"x-a"),
            (b"x-a", b"1"),
            (b"date", b"d"),
            (b"transfer-encoding", b"chunked"),
            (b"set-cookie", b"a=1"),
            (b"set-cookie", b"b=2"),
        ]
    )
    assert out == [
        (b"date", b"d"),
        (b"set-cookie", b"a=1"),
        (b"set-cookie", b"b=2"),
        (b"via", b"1.1 gateway"),
    ]
    assert (b"via", b"1.0 cdn, 1.1 gateway") in response_headers([(b"via", b"1.0 cdn")])


def test_cache_key_fields_name_the_passed_on_forwarding_fields_and_allowed_ones_only() -> None:
    from gateway.http.headers import cache_key_fields

    headers = [
        (b"accept", b"*/*"),
        (b"x-forwarded-prefix", b"/app"),
        (b"x-real-ip", b"1.2.3.4"),
        (b"forwarded", b"host=a"),
        (b"x-tenant-route", b"blue"),
    ]
    assert cache_key_fields(headers, frozenset()) == "x-forwarded-prefix=/app\nforwarded=host=a"
    assert cache_key_fields(headers, frozenset({b"x-tenant-route"})).endswith("x-tenant-route=blue")
    assert cache_key_fields([(b"accept", b"*/*")], frozenset()) == ""
