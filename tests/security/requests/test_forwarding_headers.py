"""Forwarding and override headers a client writes itself: never forwarded (so a reflecting
upstream cannot put them into a shared cache entry), underscore spellings included; the
gateway's own X-Forwarded-* are what the upstream sees and what Vary selects on."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.http.headers import FORWARDING_FAMILY
from tests.security.requests.conftest import request, start_gateway
from tests.support.gateway_process import GatewayProcess
from tests.support.upstream import RecordingUpstream

EVIL = b"evil.example"
#: The whole family, every X-Forwarded-* we know of, and underscore spellings of the
#: standard ones (CGI-style servers read X_Forwarded_Host as X-Forwarded-Host).
SPOOFED = [name.decode() for name in sorted(FORWARDING_FAMILY)] + [
    "X-Forwarded-For",
    "X-Forwarded-Host",
    "X-Forwarded-Proto",
    "X-Forwarded-Port",
    "X-Forwarded-Prefix",
    "X-Forwarded-Scheme",
    "X-Forwarded-Server",
    "X-Forwarded-Ssl",
    "X-Forwarded-Uri",
    "X-Forwarded-Path",
    "X-Forwarded-Whatever-Comes-Next",
    "X_Forwarded_For",
    "X_Forwarded_Host",
    "X-Forwarded_Host",
    "X_Original_URL",
    "X_HTTP_Method_Override",
    "X_Real_IP",
    "Client_IP",
]


def unique(path: str) -> bytes:
    return f"/api/reflect/{path}-{time.monotonic_ns()}".encode()


def spoofing_headers() -> bytes:
    return b"Host: edge.test\r\n" + b"".join(name.encode() + b": " + EVIL + b"\r\n" for name in SPOOFED)


def test_spoofed_forwarding_family_never_reaches_upstream_nor_a_clean_clients_cache_hit(
    edge: GatewayProcess, recording: RecordingUpstream, canary: RecordingUpstream
) -> None:
    target = unique("family")
    status, headers, body = request(edge.port, target, headers=spoofing_headers())
    assert status == 200 and headers[b"x-cache"] == b"MISS"
    assert EVIL not in body  # the reflecting upstream had nothing of it to reflect
    seen = recording.requests[-1]
    assert all(EVIL not in value for _, value in seen.headers)
    assert seen.header(b"x-forwarded-for") == b"127.0.0.1"
    assert seen.header(b"x-forwarded-host") == b"edge.test"
    assert seen.header(b"x-forwarded-proto") == b"http"
    # A clean client gets the shared entry: no trace of the attacker's fields.
    status, headers, body = request(edge.port, target)
    assert status == 200 and headers[b"x-cache"] == b"HIT"
    assert EVIL not in body and json.loads(body)["n"] == 1
    assert len(recording.requests) == 1 and canary.requests == []


def test_method_override_headers_are_dropped_so_a_get_stays_a_get_upstream(
    edge: GatewayProcess, recording: RecordingUpstream
) -> None:
    status, _, _ = request(
        edge.port,
        b"/limited/echo",
        headers=(
            b"Host: edge.test\r\nX-Tenant: override\r\nX-HTTP-Method-Override: DELETE\r\n"
            b"X-HTTP-Method: DELETE\r\nX-Method-Override: DELETE\r\nX-Original-URL: /admin\r\n"
            b"X-Rewrite-URL: /admin\r\n"
        ),
    )
    assert status == 200
    seen = recording.requests[-1]
    assert seen.method == "GET" and seen.raw_path == b"/limited/echo"
    names = {name.lower() for name, _ in seen.headers}
    assert not names & {
        b"x-http-method-override",
        b"x-http-method",
        b"x-method-override",
        b"x-original-url",
        b"x-rewrite-url",
    }


def test_underscore_header_names_are_dropped_and_hyphenated_ones_pass(
    edge: GatewayProcess, recording: RecordingUpstream
) -> None:
    status, _, _ = request(
        edge.port,
        b"/limited/echo",
        headers=(
            b"Host: edge.test\r\nX-Tenant: underscore\r\nX_Api_Key: k1\r\nX-Api_Key: k2\r\nX-Api-Key: k3\r\n"
        ),
    )
    assert status == 200
    seen = recording.requests[-1]
    assert [(k, v) for k, v in seen.headers if b"api" in k.lower()] == [(b"x-api-key", b"k3")]


def test_header_names_with_dots_or_other_odd_bytes_are_dropped_like_underscores(
    edge: GatewayProcess, recording: RecordingUpstream
) -> None:
    """CGI-style servers map `.` (and `_`) to `-`: `X.Forwarded.For` could pass for a field the
    gateway sets. NGINX's ignore_invalid_headers drops such names; so does the gateway."""
    status, _, _ = request(
        edge.port,
        b"/limited/echo",
        headers=(
            b"Host: edge.test\r\nX-Tenant: dots\r\nX.Forwarded.For: 6.6.6.6\r\n"
            b"X-Api+Key: k1\r\nX-Http-Host-Override: evil.example\r\nX-Api-Key: k3\r\n"
        ),
    )
    assert status == 200
    seen = recording.requests[-1]
    assert all(b"6.6.6.6" not in v and b"evil.example" not in v for _, v in seen.headers)
    assert [(k, v) for k, v in seen.headers if b"api" in k.lower()] == [(b"x-api-key", b"k3")]


def test_route_forward_headers_lets_the_named_field_through_and_no_other(
    edge: GatewayProcess, recording: RecordingUpstream
) -> None:
    status, _, _ = request(
        edge.port,
        b"/trace/x",
        headers=(
            b"Host: edge.test\r\nX-Forwarded-Prefix: /shop\r\nX-Forwarded-Port: 1\r\n"
            b"X-Original-URL: /admin\r\n"
        ),
    )
    assert status == 200
    seen = recording.requests[-1]
    assert seen.header(b"x-forwarded-prefix") == b"/shop"
    assert seen.header(b"x-forwarded-port") is None and seen.header(b"x-original-url") is None


def test_vary_on_x_forwarded_for_selects_on_the_gateways_value_not_the_clients(
    edge: GatewayProcess, recording: RecordingUpstream
) -> None:
    target = unique("vary") + b"?vary=X-Forwarded-For"
    first = request(edge.port, target, headers=b"Host: edge.test\r\nX-Forwarded-For: 1.1.1.1\r\n")
    assert first[0] == 200 and first[1][b"x-cache"] == b"MISS"
    # Another spoofed value cannot pick (or bust) a variant: it is not what is forwarded.
    for spoof in (b"2.2.2.2", b"1.1.1.1, 3.3.3.3"):
        status, headers, body = request(
            edge.port, target, headers=b"Host: edge.test\r\nX-Forwarded-For: " + spoof + b"\r\n"
        )
        assert status == 200 and headers[b"x-cache"] == b"HIT"
        assert json.loads(body)["headers"]["x-forwarded-for"] == "127.0.0.1"
    assert len(recording.requests) == 1


@pytest.fixture
def trusting(
    tmp_path: Path, recording_server: RecordingUpstream, canary_server: RecordingUpstream
) -> Iterator[GatewayProcess]:
    gw = start_gateway(tmp_path, recording_server, canary_server, GATEWAY_TRUSTED_PROXIES="127.0.0.1/32")
    yield gw
    gw.stop()


def test_trusted_proxy_keeps_the_standard_fields_but_never_the_override_ones(
    trusting: GatewayProcess, recording: RecordingUpstream
) -> None:
    status, _, _ = request(
        trusting.port,
        b"/limited/echo",
        headers=(
            b"Host: edge.test\r\nX-Tenant: trusted\r\nX-Forwarded-For: 198.51.100.7\r\n"
            b"X-Forwarded-Proto: HTTPS\r\nX-Forwarded-Host: Shop.Example\r\n"
            b"X-Real-IP: 198.51.100.7\r\nX-Forwarded-Port: 443\r\nX-Original-URL: /admin\r\n"
            b"X-HTTP-Method-Override: DELETE\r\nTrue-Client-IP: 6.6.6.6\r\n"
        ),
    )
    assert status == 200
    seen = recording.requests[-1]
    assert seen.header(b"x-forwarded-for") == b"198.51.100.7, 127.0.0.1"
    assert seen.header(b"x-forwarded-proto") == b"https"
    assert seen.header(b"x-forwarded-host") == b"shop.example"
    assert seen.header(b"x-real-ip") == b"198.51.100.7"
    assert seen.header(b"x-forwarded-port") == b"443"
    for name in (b"x-original-url", b"x-http-method-override", b"true-client-ip"):
        assert seen.header(name) is None


def test_forwarding_fields_a_trusted_proxy_passes_on_are_keyed_so_they_never_poison_a_clean_hit(
    trusting: GatewayProcess, recording: RecordingUpstream
) -> None:
    """Behind a trusted proxy that passes client-sent X-Forwarded-Prefix/-Port and Forwarded
    on, an upstream building links from them must not have its answer shared with clients
    that sent other values (or none): those fields join the cache key."""
    target = unique("trusted-prefix")
    poisoned = (
        b"Host: edge.test\r\nX-Forwarded-Prefix: //evil.example\r\n"
        b"Forwarded: host=evil.example\r\nX-Forwarded-Port: 8443\r\n"
    )
    status, headers, body = request(trusting.port, target, headers=poisoned)
    assert status == 200 and headers[b"x-cache"] == b"MISS"
    assert b"evil.example" in body  # the reflecting upstream built its answer from them
    status, headers, body = request(trusting.port, target)
    assert status == 200 and headers[b"x-cache"] == b"MISS"  # a clean client: another entry
    assert b"evil.example" not in body
    status, headers, body = request(trusting.port, target, headers=poisoned)
    assert headers[b"x-cache"] == b"HIT" and b"evil.example" in body  # same fields: shared
    assert len(recording.requests) == 2
