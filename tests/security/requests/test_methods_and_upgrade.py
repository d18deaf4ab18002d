"""TRACE/TRACK (cross-site tracing) and CONNECT are refused 405 with Allow unless a route
allows TRACE; WebSocket upgrades get a clean 501 problem until WebSockets are relayed (never
a 500 with a traceback); other Upgrade tokens are ignored (RFC 9110 §7.8) and not forwarded."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.security.requests.conftest import request, start_gateway
from tests.support.gateway_process import GatewayProcess
from tests.support.upstream import RecordingUpstream


@pytest.mark.parametrize("target", [b"/limited/x", b"/api/x", b"/nowhere", b"/__gateway/health"])
def test_trace_is_refused_405_with_allow_and_reaches_nobody(
    edge: GatewayProcess,
    recording: RecordingUpstream,
    canary: RecordingUpstream,
    target: bytes,
) -> None:
    status, headers, body = request(
        edge.port,
        target,
        method=b"TRACE",
        headers=b"Host: edge.test\r\nCookie: session=secret\r\nX-Tenant: trace\r\n",
    )
    assert status == 405
    assert b"GET" in headers[b"allow"] and b"TRACE" not in headers[b"allow"]
    assert headers[b"content-type"] == b"application/problem+json"
    assert b"secret" not in body  # nothing of the request is echoed
    assert recording.requests == [] and canary.requests == []


def test_trace_reaches_the_upstream_of_a_route_that_allows_it(
    edge: GatewayProcess, recording: RecordingUpstream
) -> None:
    status, _, _ = request(edge.port, b"/trace/echo", method=b"TRACE")
    assert status == 200
    assert recording.requests[-1].method == "TRACE"


def test_connect_is_refused_405_even_on_a_route_that_allows_trace(
    edge: GatewayProcess, recording: RecordingUpstream
) -> None:
    status, _, _ = request(edge.port, b"/trace/echo", method=b"CONNECT")
    assert status in (400, 405)  # httptools may refuse a CONNECT target first
    assert recording.requests == []


@pytest.fixture
def track_edge(
    tmp_path: Path, recording_server: RecordingUpstream, canary_server: RecordingUpstream
) -> Iterator[GatewayProcess]:
    gw = start_gateway(tmp_path, recording_server, canary_server)
    yield gw
    gw.stop()


def test_track_trace_connect_are_refused_405_now_that_every_method_token_is_parsed(
    track_edge: GatewayProcess, recording: RecordingUpstream
) -> None:
    for method in (b"TRACK", b"TRACE", b"CONNECT"):
        status, headers, _ = request(
            track_edge.port, b"/limited/x", method=method, headers=b"Host: edge.test\r\nX-Tenant: track\r\n"
        )
        assert status == 405 and b"allow" in headers
    assert recording.requests == []


def test_websocket_handshake_from_a_real_client_gets_a_501_problem_not_a_500(
    edge: GatewayProcess, recording: RecordingUpstream, canary: RecordingUpstream
) -> None:
    with pytest.raises(InvalidStatus) as refused:
        connect(f"ws://127.0.0.1:{edge.port}/api/socket", open_timeout=10)
    response = refused.value.response
    assert response.status_code == 501
    assert response.headers["content-type"] == "application/problem+json"
    assert json.loads(response.body)["title"] == "Not Implemented"
    assert recording.requests == [] and canary.requests == []
    assert "Traceback" not in edge.logs()
    assert request(edge.port, b"/__gateway/health")[0] == 200  # the worker is fine


def test_websocket_upgrade_the_server_does_not_switch_gets_a_501_problem(
    edge: GatewayProcess, recording: RecordingUpstream
) -> None:
    # Without "Connection: Upgrade" uvicorn keeps it an HTTP request: the gateway refuses.
    status, headers, _ = request(
        edge.port,
        b"/api/socket",
        headers=(
            b"Host: edge.test\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        ),
    )
    assert status == 501
    assert headers[b"content-type"] == b"application/problem+json"
    assert recording.requests == []


def test_other_upgrade_tokens_are_ignored_and_the_request_is_proxied_without_them(
    edge: GatewayProcess, recording: RecordingUpstream
) -> None:
    raw = (
        b"GET /trace/echo HTTP/1.1\r\nHost: edge.test\r\nConnection: Upgrade, close\r\n"
        b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", edge.port), timeout=10) as sock:
        sock.sendall(raw)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 ")
    seen = recording.requests[-1]
    assert seen.header(b"upgrade") is None and seen.header(b"http2-settings") is None
    assert "Traceback" not in edge.logs()
