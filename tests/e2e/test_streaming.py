"""Bodies stream both ways with bounded memory; the upstream is released when clients leave."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.e2e.conftest import GatewayFactory
from tests.support.gateway_process import GatewayProcess
from tests.support.upstream import RecordingUpstream

MiB = 1024 * 1024


def rss(gw: GatewayProcess) -> int:
    assert gw.proc is not None
    for line in Path(f"/proc/{gw.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_large_upload_streams_with_bounded_memory(
    gateway_factory: GatewayFactory, upstream: RecordingUpstream
) -> None:
    gw = gateway_factory(
        {"GATEWAY_CACHE_ENABLED": "false", "GATEWAY_MAX_BODY_BYTES": "0", "GATEWAY_ACCESS_LOG": "false"}
    )
    httpx.post(f"{gw.url}/echo", content=b"warm")
    before = rss(gw)
    size = 300 * MiB

    def body() -> Iterator[bytes]:
        chunk = b"z" * MiB
        for _ in range(size // MiB):
            yield chunk

    response = httpx.post(f"{gw.url}/echo", content=body(), timeout=120)
    assert response.json()["body_len"] == size
    assert rss(gw) - before < 30 * MiB


def test_large_download_streams_with_bounded_memory(
    gateway_factory: GatewayFactory, upstream: RecordingUpstream
) -> None:
    gw = gateway_factory({"GATEWAY_CACHE_ENABLED": "false", "GATEWAY_ACCESS_LOG": "false"})
    httpx.get(f"{gw.url}/big?size=10")
    before = rss(gw)
    size, received, peak = 300 * MiB, 0, 0
    with httpx.stream("GET", f"{gw.url}/big?size={size}", timeout=120) as response:
        assert response.headers["content-length"] == str(size)
        for chunk in response.iter_raw(MiB):
            received += len(chunk)
            if received % (32 * MiB) < MiB:
                peak = max(peak, rss(gw))
    assert received == size
    assert max(peak, rss(gw)) - before < 30 * MiB


def test_client_leaving_mid_stream_releases_the_upstream(
    gateway_factory: GatewayFactory, upstream: RecordingUpstream
) -> None:
    gw = gateway_factory({"GATEWAY_CACHE_ENABLED": "false", "GATEWAY_UPSTREAM_MAX_CONNECTIONS": "2"})
    for _ in range(4):  # more abandoned streams than pooled connections
        sock = socket.create_connection(("127.0.0.1", gw.port))
        sock.sendall(b"GET /stream?chunks=100&interval=0.05 HTTP/1.1\r\nHost: h\r\n\r\n")
        assert b"chunk 0" in sock.recv(4096) or b"chunk" in sock.recv(4096)
        sock.close()
    deadline = time.monotonic() + 5
    while len(upstream.abandoned) < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(upstream.abandoned) == 4, "upstream streams were not closed"
    # The pool (2 connections) still has room: nothing leaked.
    response = httpx.get(f"{gw.url}/echo", timeout=5)
    assert response.status_code == 200


def test_streamed_response_arrives_incrementally(
    gateway: GatewayProcess, upstream: RecordingUpstream
) -> None:
    with httpx.stream("GET", f"{gateway.url}/stream?chunks=3&interval=0.3", timeout=10) as response:
        started = time.monotonic()
        chunks = response.iter_raw()
        first = next(chunks)
        assert b"chunk 0" in first
        assert time.monotonic() - started < 0.25  # not held back until the stream ends
        rest = b"".join(chunks)
    assert b"chunk 2" in first + rest
