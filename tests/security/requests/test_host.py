"""The Host field (RFC 9112 §3.2, RFC 9110 §7.2): missing, repeated or malformed is a 400 that
reaches nobody; the host is lowercased for the cache key and X-Forwarded-Host; an absolute-form
target's authority replaces Host (§3.2.2)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.security.requests.conftest import request, start_gateway
from tests.support.gateway_process import GatewayProcess
from tests.support.upstream import RecordingUpstream


def test_http11_request_without_host_is_refused_400_and_reaches_nobody(
    edge: GatewayProcess, recording: RecordingUpstream, canary: RecordingUpstream
) -> None:
    status, headers, _ = request(edge.port, b"/limited/echo", headers=b"X-Tenant: nohost\r\n")
    assert status == 400 and headers[b"connection"] == b"close"
    assert recording.requests == [] and canary.requests == []


def test_two_host_lines_are_refused_400_and_reach_nobody(
    edge: GatewayProcess, recording: RecordingUpstream
) -> None:
    status, _, _ = request(
        edge.port, b"/limited/echo", headers=b"Host: edge.test\r\nHost: evil.example\r\nX-Tenant: two\r\n"
    )
    assert status == 400
    assert recording.requests == []


@pytest.mark.parametrize(
    "host",
    [
        b"",
        b"evil.example/x",
        b"evil.example\\x",
        b"user@edge.test",
        b"edge.test:99999",
        b"edge.test:80:80",
        b"edge.test:8o",
        b"[zz::1]",
        b"[::1",
        b"edge test",
        b'edge"test',
        b"edge.test?x",
        b"edge.test#x",
        b"%65dge.test",
        b"<script>",
    ],
)
def test_malformed_host_is_refused_400_and_reaches_nobody(
    edge: GatewayProcess, recording: RecordingUpstream, host: bytes
) -> None:
    status, _, _ = request(
        edge.port, b"/limited/echo", headers=b"Host: " + host + b"\r\nX-Tenant: bad-host\r\n"
    )
    assert status == 400
    assert recording.requests == []


@pytest.mark.parametrize(
    "host", [b"edge.test", b"edge.test:8080", b"127.0.0.1:1", b"[::1]:8080", b"edge-1.example_x.test."]
)
def test_valid_host_forms_are_served(edge: GatewayProcess, recording: RecordingUpstream, host: bytes) -> None:
    status, _, _ = request(edge.port, b"/trace/echo", headers=b"Host: " + host + b"\r\n")
    assert status == 200
    assert recording.requests[-1].header(b"x-forwarded-host") == host.lower().rstrip(b".")


def test_http10_request_without_host_is_served(edge: GatewayProcess, recording: RecordingUpstream) -> None:
    status, _, _ = request(edge.port, b"/trace/echo", headers=b"", version=b"HTTP/1.0")
    assert status == 200
    assert recording.requests[-1].header(b"x-forwarded-host") is None


def test_host_case_does_not_split_the_cache_and_upstream_sees_it_lowercased(
    edge: GatewayProcess, recording: RecordingUpstream
) -> None:
    target = f"/api/reflect/host-{time.monotonic_ns()}".encode()
    first = request(edge.port, target, headers=b"Host: EDGE.Test\r\n")
    assert first[0] == 200 and first[1][b"x-cache"] == b"MISS"
    assert json.loads(first[2])["headers"]["x-forwarded-host"] == "edge.test"
    second = request(edge.port, target, headers=b"Host: edge.TEST.\r\n")
    assert second[0] == 200 and second[1][b"x-cache"] == b"HIT"
    assert len(recording.requests) == 1


@pytest.fixture
def absolute_edge(
    tmp_path: Path, recording_server: RecordingUpstream, canary_server: RecordingUpstream
) -> Iterator[GatewayProcess]:
    gw = start_gateway(tmp_path, recording_server, canary_server)
    yield gw
    gw.stop()


def test_absolute_form_target_authority_replaces_host(
    absolute_edge: GatewayProcess, recording: RecordingUpstream
) -> None:
    target = f"/api/reflect/absolute-{time.monotonic_ns()}"
    status, headers, _ = request(
        absolute_edge.port,
        f"http://Other.Example:8080{target}".encode(),
        headers=b"Host: edge.test\r\n",
    )
    assert status == 200 and headers[b"x-cache"] == b"MISS"
    seen = recording.requests[-1]
    assert seen.raw_path == target.replace("/api", "", 1).encode()
    assert seen.header(b"x-forwarded-host") == b"other.example:8080"
    # The cache keyed it under the target's authority: Host edge.test is another entry.
    again = request(absolute_edge.port, target.encode(), headers=b"Host: edge.test\r\n")
    assert again[1][b"x-cache"] == b"MISS"
    same = request(absolute_edge.port, target.encode(), headers=b"Host: other.example:8080\r\n")
    assert same[1][b"x-cache"] == b"HIT"


@pytest.mark.parametrize(
    "target",
    [
        b"http://user@evil.example/limited/x",
        b"http://evil example/limited/x",
        b"ftp://edge.test/limited/x",
        b"edge.test/limited/x",
        b"http://edge.test/../limited/x",
        b"http://edge.test/limited%2fx",
    ],
)
def test_absolute_form_with_a_bad_authority_scheme_or_path_is_refused_400(
    absolute_edge: GatewayProcess, recording: RecordingUpstream, target: bytes
) -> None:
    status, _, _ = request(absolute_edge.port, target, headers=b"Host: edge.test\r\nX-Tenant: abs\r\n")
    assert status == 400
    assert recording.requests == []


def test_absolute_form_dot_segments_are_normalised_and_its_authority_replaces_host(
    edge: GatewayProcess, recording: RecordingUpstream
) -> None:
    """The front end keeps the absolute-form target's authority visible (uvicorn alone would
    drop it), so RFC 9112 §3.2.2 holds: the authority replaces Host; path rules still apply."""
    status, _, _ = request(edge.port, b"http://other.example/x/../trace/echo", headers=b"Host: edge.test\r\n")
    assert status == 200
    seen = recording.requests[-1]
    assert seen.raw_path == b"/trace/echo"
    assert seen.header(b"x-forwarded-host") == b"other.example"
