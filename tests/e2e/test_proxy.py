"""The reverse proxy as a user sees it: a real gateway process in front of a real upstream."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.conftest import GatewayFactory
from tests.support.gateway_process import GatewayProcess
from tests.support.raw_http import raw_request
from tests.support.redis_server import free_port
from tests.support.upstream import RecordingUpstream


def header_values(headers: list[tuple[bytes, bytes]], name: bytes) -> list[bytes]:
    return [v for k, v in headers if k == name]


def test_get_passes_status_headers_and_body_untouched(
    gateway: GatewayProcess, upstream: RecordingUpstream
) -> None:
    status, headers, body = raw_request(
        gateway.port, b"GET /plain HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\n\r\n"
    )
    assert status == 200 and body == b"ok"
    # The upstream's Date and Server, not ones added by the server in front.
    assert header_values(headers, b"date") == [b"Mon, 01 Jan 2024 00:00:00 GMT"]
    assert header_values(headers, b"server") == [b"recording-upstream"]
    assert header_values(headers, b"via") == [b"1.1 gateway"]
    assert len(upstream.requests) == 1


@pytest.mark.parametrize(
    "method", ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PROPFIND", "PURGE", "QUERY"]
)
def test_any_method_is_forwarded(gateway: GatewayProcess, upstream: RecordingUpstream, method: str) -> None:
    response = httpx.request(method, f"{gateway.url}/echo", content=b"" if method == "GET" else b"x")
    assert response.status_code == 200
    assert response.json()["method"] == method


def test_arbitrary_extension_methods_are_forwarded(
    gateway_factory: GatewayFactory, upstream: RecordingUpstream
) -> None:
    gw = gateway_factory({"GATEWAY_CACHE_ENABLED": "false"})
    response = httpx.request("X-CUSTOM-VERB", f"{gw.url}/echo", content=b"x")
    assert response.status_code == 200
    assert response.json()["method"] == "X-CUSTOM-VERB"


def test_query_is_forwarded_byte_for_byte_and_the_path_in_its_normal_form(
    gateway: GatewayProcess, upstream: RecordingUpstream
) -> None:
    query = b"q=a%20b&empty=&flag&x=%2B+1&p=%2F%2e"
    target = b"/echo/%7euser/caf%c3%a9;p=1?" + query
    status, _, _ = raw_request(
        gateway.port, b"GET " + target + b" HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
    )
    assert status == 200
    seen = upstream.requests[-1]
    assert seen.query == query  # the query is never normalised
    assert seen.raw_path == b"/echo/~user/caf%C3%A9;p=1"  # unreserved decoded, hex uppercased


def test_escaped_slash_is_forwarded_untouched_when_configured_to_keep(
    gateway_factory: GatewayFactory, upstream: RecordingUpstream
) -> None:
    gw = gateway_factory({"GATEWAY_CACHE_ENABLED": "false", "GATEWAY_PATH_ESCAPED_SLASHES": "keep"})
    target = b"/echo/a%2fb/c%5Cd"
    status, _, _ = raw_request(
        gw.port, b"GET " + target + b" HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
    )
    assert status == 200
    assert upstream.requests[-1].raw_path == b"/echo/a%2Fb/c%5Cd"


def test_request_body_and_headers_arrive_intact(gateway: GatewayProcess, upstream: RecordingUpstream) -> None:
    payload = bytes(range(256)) * 1000
    response = httpx.post(
        f"{gateway.url}/echo", content=payload, headers={b"X-Custom": "caf\u00e9 \u2713".encode()}
    )
    doc = response.json()
    assert doc["body_len"] == len(payload)
    seen = upstream.requests[-1]
    assert seen.header(b"x-custom") == "caf\u00e9 \u2713".encode()
    assert seen.header(b"content-length") == str(len(payload)).encode()


def test_header_bytes_that_are_not_utf8_are_forwarded_verbatim(
    gateway: GatewayProcess, upstream: RecordingUpstream
) -> None:
    status, headers, _ = raw_request(
        gateway.port,
        (
            b"POST /echo HTTP/1.1\r\nHost: h\r\nX-Latin: Jos\xe9 M\xfcller\r\n"
            b"X-Utf8: caf\xc3\xa9\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc"
        ),
    )
    assert status == 200
    seen = upstream.requests[-1]
    assert seen.header(b"x-latin") == b"Jos\xe9 M\xfcller"
    assert seen.header(b"x-utf8") == b"caf\xc3\xa9"
    assert seen.body_len == 3 and seen.header(b"x-forwarded-for") == b"127.0.0.1"
    assert header_values(headers, b"via") == [b"1.1 gateway"]


def test_hop_by_hop_headers_are_removed_in_both_directions(
    gateway: GatewayProcess, upstream: RecordingUpstream
) -> None:
    status, headers, _ = raw_request(
        gateway.port,
        (
            b"GET /cache/hop?h=X-Secret-Hop:1&h=Connection:X-Secret-Hop&h=Proxy-Authenticate:Basic"
            b"&h=X-Kept:yes HTTP/1.1\r\nHost: h\r\nConnection: close, X-Drop-Me\r\n"
            b"X-Drop-Me: 1\r\nKeep-Alive: 5\r\nTE: trailers\r\nProxy-Authorization: Basic eA==\r\n"
            b"Upgrade: h2c\r\nX-Keep: 1\r\n\r\n"
        ),
    )
    assert status == 200
    seen = upstream.requests[-1]
    names = {k.lower() for k, _ in seen.headers}
    for dropped in (b"x-drop-me", b"keep-alive", b"te", b"proxy-authorization", b"upgrade"):
        assert dropped not in names
    assert seen.header(b"x-keep") == b"1"
    response_names = {k for k, _ in headers}
    assert b"x-secret-hop" not in response_names
    assert b"proxy-authenticate" not in response_names
    assert header_values(headers, b"x-kept") == [b"yes"]


def test_forwarding_headers_from_untrusted_clients_are_replaced(
    gateway: GatewayProcess, upstream: RecordingUpstream
) -> None:
    response = httpx.get(
        f"{gateway.url}/echo",
        headers={
            "Host": "shop.example",
            "X-Forwarded-For": "6.6.6.6",
            "X-Forwarded-Host": "evil.example",
            "X-Forwarded-Proto": "https",
            "X-Real-IP": "6.6.6.6",
            "Forwarded": "for=6.6.6.6",
            "X-Request-ID": "req-123",
        },
    )
    assert response.headers["x-request-id"] == "req-123"
    seen = upstream.requests[-1]
    assert seen.header(b"x-forwarded-for") == b"127.0.0.1"
    assert seen.header(b"x-forwarded-host") == b"shop.example"
    assert seen.header(b"x-forwarded-proto") == b"http"
    assert seen.header(b"x-real-ip") is None and seen.header(b"forwarded") is None
    assert seen.header(b"via") == b"1.1 gateway"
    assert seen.header(b"x-request-id") == b"req-123"
    # The upstream is addressed by its own name, never by the client's Host.
    assert seen.header(b"host") == upstream.url.removeprefix("http://").encode()


def test_an_upstream_echoing_the_request_id_does_not_duplicate_it(
    gateway: GatewayProcess, upstream: RecordingUpstream
) -> None:
    status, headers, _ = raw_request(
        gateway.port,
        b"GET /cache/rid?h=X-Request-ID:abc HTTP/1.1\r\n"
        b"Host: h\r\nX-Request-ID: abc\r\nConnection: close\r\n\r\n",
    )
    assert status == 200
    assert header_values(headers, b"x-request-id") == [b"abc"]


def test_request_id_is_generated_when_missing_or_malformed(
    gateway: GatewayProcess, upstream: RecordingUpstream
) -> None:
    first = httpx.get(f"{gateway.url}/echo")
    second = httpx.get(f"{gateway.url}/echo", headers={"X-Request-ID": "bad id\twith spaces"})
    ids = {first.headers["x-request-id"], second.headers["x-request-id"]}
    assert len(ids) == 2 and "bad id\twith spaces" not in ids
    assert upstream.requests[-1].header(b"x-request-id") == second.headers["x-request-id"].encode()


def test_forwarding_chain_extended_only_for_trusted_proxies(
    gateway_factory: GatewayFactory, upstream: RecordingUpstream
) -> None:
    gw = gateway_factory({"GATEWAY_TRUSTED_PROXIES": "127.0.0.0/8, ::1"})
    httpx.get(
        f"{gw.url}/echo",
        headers={
            "X-Forwarded-For": "203.0.113.7",
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": "public.example",
        },
    )
    seen = upstream.requests[-1]
    assert seen.header(b"x-forwarded-for") == b"203.0.113.7, 127.0.0.1"
    assert seen.header(b"x-forwarded-proto") == b"https"
    assert seen.header(b"x-forwarded-host") == b"public.example"
    # Entries the client wrote left of the first untrusted hop are never forwarded: an
    # upstream that reflects X-Forwarded-For cannot be made to echo them.
    httpx.get(f"{gw.url}/echo", headers={"X-Forwarded-For": "<script>, 6.6.6.6, 203.0.113.7"})
    assert upstream.requests[-1].header(b"x-forwarded-for") == b"203.0.113.7, 127.0.0.1"


def test_absolute_form_target_and_crafted_host_never_steer(
    gateway: GatewayProcess, upstream: RecordingUpstream
) -> None:
    status, _, _ = raw_request(
        gateway.port,
        b"GET http://169.254.169.254/echo/meta HTTP/1.1\r\n"
        b"Host: 169.254.169.254\r\nConnection: close\r\n\r\n",
    )
    assert status == 200
    seen = upstream.requests[-1]
    assert seen.raw_path == b"/echo/meta"
    assert seen.header(b"host") == upstream.url.removeprefix("http://").encode()


def test_redirects_are_passed_back_not_followed(gateway: GatewayProcess, upstream: RecordingUpstream) -> None:
    response = httpx.get(
        f"{gateway.url}/cache/r?h=Location:http://127.0.0.1:1/elsewhere", follow_redirects=False
    )
    assert response.headers["location"] == "http://127.0.0.1:1/elsewhere"
    assert len(upstream.requests) == 1


def test_upstream_cookies_are_not_kept_between_users(
    gateway: GatewayProcess, upstream: RecordingUpstream
) -> None:
    first = httpx.get(f"{gateway.url}/cache/c?h=Set-Cookie:session=alice")
    assert first.headers["set-cookie"] == "session=alice"
    httpx.get(f"{gateway.url}/echo")
    assert upstream.requests[-1].header(b"cookie") is None


def test_head_gets_headers_without_body(gateway: GatewayProcess, upstream: RecordingUpstream) -> None:
    response = httpx.head(f"{gateway.url}/big?size=1000")
    assert response.status_code == 200
    assert response.headers["content-length"] == "1000" and response.content == b""


def test_admin_paths_are_never_forwarded(gateway: GatewayProcess, upstream: RecordingUpstream) -> None:
    assert httpx.get(f"{gateway.url}/__gateway/health").json() == {"status": "ok"}
    assert httpx.get(f"{gateway.url}/__gateway/nothing-here").status_code == 404
    assert upstream.requests == []


def test_connection_refused_is_a_502_problem_without_addresses(
    gateway_factory: GatewayFactory, upstream: RecordingUpstream
) -> None:
    dead = free_port()
    gw = gateway_factory({"GATEWAY_UPSTREAM_URL": f"http://127.0.0.1:{dead}"})
    response = httpx.get(f"{gw.url}/anything")
    assert response.status_code == 502
    assert response.headers["content-type"] == "application/problem+json"
    doc = response.json()
    assert doc["status"] == 502 and doc["title"] == "Bad Gateway"
    assert str(dead) not in response.text and "127.0.0.1" not in response.text


def test_slow_upstream_is_a_504_problem(gateway_factory: GatewayFactory, upstream: RecordingUpstream) -> None:
    gw = gateway_factory({"GATEWAY_UPSTREAM_TIMEOUT": "0.3"})
    response = httpx.get(f"{gw.url}/slow?seconds=3", timeout=10)
    assert response.status_code == 504
    assert response.json()["status"] == 504
    assert response.elapsed.total_seconds() < 2


def test_reset_mid_headers_is_a_502(gateway_factory: GatewayFactory, upstream: RecordingUpstream) -> None:
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.2)
    port = listener.getsockname()[1]
    stop = threading.Event()

    def slam() -> None:  # an upstream that hangs up on every request without answering
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            conn.recv(1024)
            conn.close()

    thread = threading.Thread(target=slam)
    thread.start()
    try:
        gw = gateway_factory({"GATEWAY_UPSTREAM_URL": f"http://127.0.0.1:{port}"})
        response = httpx.get(f"{gw.url}/x", timeout=10)
    finally:
        stop.set()
        thread.join()
        listener.close()
    assert response.status_code == 502
    assert response.json()["title"] == "Bad Gateway"


def test_declared_body_over_the_limit_is_413_and_not_forwarded(
    gateway_factory: GatewayFactory, upstream: RecordingUpstream
) -> None:
    gw = gateway_factory({"GATEWAY_MAX_BODY_BYTES": "1000"})
    response = httpx.post(f"{gw.url}/echo", content=b"x" * 1001)
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"
    assert upstream.requests == []
    assert httpx.post(f"{gw.url}/echo", content=b"x" * 1000).json()["body_len"] == 1000


def test_chunked_body_over_the_limit_is_413(
    gateway_factory: GatewayFactory, upstream: RecordingUpstream
) -> None:
    gw = gateway_factory({"GATEWAY_MAX_BODY_BYTES": "100000"})

    def chunks() -> Iterator[bytes]:
        for _ in range(50):
            yield b"y" * 10000

    response = httpx.post(f"{gw.url}/echo", content=chunks())
    assert response.status_code == 413
    assert all(r.body_len <= 100000 for r in upstream.requests)


def test_invalid_content_length_is_400(gateway: GatewayProcess, upstream: RecordingUpstream) -> None:
    status, _, _ = raw_request(
        gateway.port, b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: abc\r\nConnection: close\r\n\r\n"
    )
    assert 400 <= status < 500
    assert upstream.requests == []


def test_problem_bodies_are_small_json(gateway_factory: GatewayFactory, upstream: RecordingUpstream) -> None:
    gw = gateway_factory({"GATEWAY_UPSTREAM_URL": f"http://127.0.0.1:{free_port()}"})
    response = httpx.get(f"{gw.url}/x", headers={"X-Request-ID": "trace-1"})
    doc = json.loads(response.content)
    assert len(response.content) < 300
    assert doc["request_id"] == "trace-1"


def test_several_workers_serve_and_each_writes_access_lines(
    gateway_factory: GatewayFactory, upstream: RecordingUpstream
) -> None:
    gw = gateway_factory({"GATEWAY_WORKERS": "2", "GATEWAY_CACHE_ENABLED": "false"})
    for _ in range(6):
        assert httpx.get(f"{gw.url}/echo").status_code == 200
    import time

    deadline = time.monotonic() + 5
    while gw.logs().count("gateway.access") < 6 and time.monotonic() < deadline:
        time.sleep(0.05)
    lines = [
        json.loads(line.split("gateway.access ", 1)[1])
        for line in gw.logs().splitlines()
        if "gateway.access" in line
    ]
    assert len([entry for entry in lines if entry["path"] == "/echo"]) == 6
    assert gw.logs().count("per process") == 2  # each worker says it runs on its own store
