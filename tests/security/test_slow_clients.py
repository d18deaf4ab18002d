"""Slow and stalled clients: deadlines cut them, upstream connections are not held for them,
and an honest slow upload still passes. Timeouts are short here (1-2 s); bounds are generous."""

from __future__ import annotations

import hashlib
import socket
import threading
import time

import httpx

from tests.security.conftest import StartGateway
from tests.security.raw import connect, read_response, read_until_closed, statuses
from tests.security.upstreams import RawRecorder

FAST = {"GATEWAY_HEADER_TIMEOUT": "1", "GATEWAY_KEEPALIVE_TIMEOUT": "1", "GATEWAY_BODY_TIMEOUT": "1"}


def test_slow_loris_head_is_cut_with_408_within_the_header_timeout(
    start_gateway: StartGateway, recorder: RawRecorder
) -> None:
    gateway = start_gateway(FAST)
    with connect(gateway.port) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /loris HTTP/1.1\r\nHost: a\r\n")
        closed = False
        data = b""
        for i in range(40):  # one header line every 0.25 s: never finishing
            try:
                sock.sendall(b"X-%d: v\r\n" % i)
            except OSError:
                closed = True
                break
            time.sleep(0.25)
            sock.settimeout(0.01)
            try:
                chunk = sock.recv(65536)
                data += chunk
                if not chunk:
                    closed = True
                    break
            except TimeoutError:
                pass
        more, closed_after = read_until_closed(sock, timeout=5)
        elapsed = time.monotonic() - started
    assert closed or closed_after
    assert elapsed < 6, f"the slow head held the connection {elapsed:.1f}s"
    assert statuses(data + more) == [408]
    assert recorder.requests == []


def test_connection_that_sends_nothing_is_closed_after_the_header_timeout(
    start_gateway: StartGateway,
) -> None:
    gateway = start_gateway(FAST)
    with connect(gateway.port) as sock:
        data, closed = read_until_closed(sock, timeout=6)
    assert closed and data == b""


def test_idle_keep_alive_connection_is_closed_after_the_keepalive_timeout(
    start_gateway: StartGateway, recorder: RawRecorder
) -> None:
    gateway = start_gateway({**FAST, "GATEWAY_KEEPALIVE_TIMEOUT": "1.5"})
    with connect(gateway.port) as sock:
        sock.sendall(b"GET /ka HTTP/1.1\r\nHost: a\r\n\r\n")
        assert statuses(read_response(sock)) == [200]
        started = time.monotonic()
        data, closed = read_until_closed(sock, timeout=8)
        elapsed = time.monotonic() - started
    assert closed and data == b""
    assert 1.0 < elapsed < 6


def test_stalled_small_body_gets_408_and_never_reaches_the_upstream(
    start_gateway: StartGateway, recorder: RawRecorder
) -> None:
    gateway = start_gateway(FAST)
    with connect(gateway.port) as sock:
        sock.sendall(b"POST /stall HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)
        data, closed = read_until_closed(sock, timeout=8)
    assert statuses(data) == [408]
    assert closed
    assert recorder.requests == [] and recorder.connections == []


def test_stalled_large_body_gets_408_and_the_upstream_request_is_aborted(
    start_gateway: StartGateway, recorder: RawRecorder
) -> None:
    gateway = start_gateway(FAST)
    with connect(gateway.port) as sock:
        sock.sendall(b"POST /stall HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000\r\n\r\n")
        sock.sendall(b"x" * 200_000)  # past the 64 KiB request buffer: it streams upstream
        data, closed = read_until_closed(sock, timeout=8)
    assert statuses(data) == [408]
    assert closed
    assert recorder.wait_for_abort(5), "the upstream request was left open"
    assert recorder.requests == []


def test_slow_small_bodies_do_not_pin_the_upstream_pool(
    start_gateway: StartGateway, recorder: RawRecorder
) -> None:
    # One upstream connection in all; five clients trickle small bodies for ~2 s each.
    gateway = start_gateway(
        {
            "GATEWAY_UPSTREAM_MAX_CONNECTIONS": "1",
            "GATEWAY_UPSTREAM_TIMEOUT": "1",
            "GATEWAY_BODY_TIMEOUT": "5",
        }
    )
    slow: list[socket.socket] = []

    def trickle(sock: socket.socket) -> None:
        for _ in range(10):
            sock.sendall(b"y" * 10)
            time.sleep(0.2)

    for _ in range(5):
        sock = connect(gateway.port)
        sock.sendall(b"POST /slow HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n")
        slow.append(sock)
    threads = [threading.Thread(target=trickle, args=(s,)) for s in slow]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.3)
        started = time.monotonic()
        for i in range(5):
            assert httpx.get(f"{gateway.url}/fast{i}", timeout=5).status_code == 200
        assert time.monotonic() - started < 1.5  # no 504 waiting behind the trickles
        for thread in threads:
            thread.join()
        for sock in slow:
            assert statuses(read_response(sock)) == [200]
    finally:
        for sock in slow:
            sock.close()
    bodies = [r.body for r in recorder.requests if r.target == b"/slow"]
    assert bodies == [b"y" * 100] * 5


def test_honest_slow_upload_passes_although_it_outlasts_the_upstream_timeout(
    start_gateway: StartGateway, recorder: RawRecorder
) -> None:
    # 2 MiB at ~512 KiB/s takes ~4 s: longer than GATEWAY_UPSTREAM_TIMEOUT (1.5 s), which
    # before this change started with the request and cut the upload with a 504.
    gateway = start_gateway({**FAST, "GATEWAY_UPSTREAM_TIMEOUT": "1.5"})
    payload = bytes(range(256)) * (2 * 1024 * 1024 // 256)
    step = 32 * 1024
    started = time.monotonic()
    with connect(gateway.port, timeout=30) as sock:
        sock.sendall(
            b"PUT /upload HTTP/1.1\r\nHost: a\r\nConnection: close\r\n"
            b"Content-Length: %d\r\n\r\n" % len(payload)
        )
        for offset in range(0, len(payload), step):
            sock.sendall(payload[offset : offset + step])
            time.sleep(step / (512 * 1024))
        data, _ = read_until_closed(sock, timeout=15)
    assert time.monotonic() - started > 3
    assert statuses(data) == [200]
    [seen] = recorder.requests
    assert hashlib.sha256(seen.body).digest() == hashlib.sha256(payload).digest()
