"""An attacker's second look at the front end and the request view, against a real gateway
process: the recording upstream (route `/`) must see only what the gateway means to forward,
and the canary upstream (route `/canary`) must never see a byte.

Two attacks here found holes that are fixed with these tests: lower-case methods (the upstream
client upper-cases every method, so `trace` reached the upstream as TRACE) and absolute-form
targets into the admin API. The others pin defences that held but that no test covered.
"""

from __future__ import annotations

import time

import httpx
import pytest

from tests.security.raw import connect, exchange, read_until_closed, statuses
from tests.security.upstreams import Canary, RawRecorder
from tests.support.gateway_process import GatewayProcess

SMUGGLED = b"GET /canary/smuggled HTTP/1.1\r\nHost: a\r\n\r\n"
CLOSE = b"Connection: close\r\n"

# -- lower-case methods ---------------------------------------------------------------------

LOWER_CASE_METHODS: dict[str, bytes] = {
    # refused with 405 in upper case; aiohttp sent them upstream upper-cased
    "trace": b"trace /x HTTP/1.1\r\nHost: a\r\nCookie: session=secret\r\n" + CLOSE + b"\r\n",
    "Trace": b"Trace /x HTTP/1.1\r\nHost: a\r\n" + CLOSE + b"\r\n",
    "track": b"track /x HTTP/1.1\r\nHost: a\r\n" + CLOSE + b"\r\n",
    # reached the upstream as CONNECT <upstream host:port>, a tunnel request
    "connect": b"connect /x HTTP/1.1\r\nHost: a\r\n" + CLOSE + b"\r\n",
    # reached the upstream as POST while the rate limiter priced an unknown method
    "post": b"post /x HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n" + CLOSE + b"\r\nhi",
    # reached the upstream as GET with its body (GET bodies are otherwise dropped)
    "get_with_body": b"get /x HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n" + CLOSE + b"\r\nevil",
}


@pytest.mark.parametrize("payload", LOWER_CASE_METHODS.values(), ids=LOWER_CASE_METHODS.keys())
def test_lower_case_method_is_rejected_400_so_trace_connect_and_fat_get_never_reach_upstream(
    edge_gateway: GatewayProcess, recorder: RawRecorder, canary: Canary, payload: bytes
) -> None:
    data, closed = exchange(edge_gateway.port, payload)
    assert statuses(data) == [400], data
    assert closed
    assert recorder.requests == []


def test_upper_case_extension_method_still_reaches_the_upstream_with_its_own_token(
    edge_gateway: GatewayProcess, recorder: RawRecorder
) -> None:
    data, _ = exchange(edge_gateway.port, b"X-SYNC-2 /x HTTP/1.1\r\nHost: a\r\n" + CLOSE + b"\r\n")
    assert statuses(data) == [200]
    assert [r.method for r in recorder.requests] == [b"X-SYNC-2"]


# -- absolute-form targets into the admin API ----------------------------------------------


@pytest.mark.parametrize(
    "request_line",
    [
        b"GET http://a/__gateway/metrics HTTP/1.1",
        b"GET HTTP://A/__gateway/health HTTP/1.1",
        b"GET https://a:443/__gateway/ready HTTP/1.1",
    ],
)
def test_absolute_form_target_into_the_admin_prefix_is_refused_400_like_other_spellings(
    edge_gateway: GatewayProcess, recorder: RawRecorder, request_line: bytes
) -> None:
    # An outer proxy guarding `/__gateway` by the plain path prefix lets an absolute-form
    # target through; the admin API answers only its exact origin-form spelling.
    data, closed = exchange(edge_gateway.port, request_line + b"\r\nHost: a\r\n" + CLOSE + b"\r\n")
    assert statuses(data) == [400], data
    assert b"gateway_responses_total" not in data and b'"status":"ok"' not in data
    assert closed
    assert recorder.requests == []


def test_absolute_form_target_outside_the_admin_prefix_is_still_served(
    edge_gateway: GatewayProcess, recorder: RawRecorder
) -> None:
    data, _ = exchange(edge_gateway.port, b"GET http://a/x HTTP/1.1\r\nHost: a\r\n" + CLOSE + b"\r\n")
    assert statuses(data) == [200]
    assert [r.target for r in recorder.requests] == [b"/x"]


# -- framing variants test_framing.py does not cover (the defence held) ---------------------

REJECTED: dict[str, bytes] = {
    "te_chunked_chunked": b"POST /e HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n"
    b"\r\n0\r\n\r\n" + SMUGGLED,
    "te_empty_list_member": b"POST /e HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ,chunked\r\n\r\n"
    b"0\r\n\r\n" + SMUGGLED,
    "te_vertical_tab": b"POST /e HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \x0bchunked\r\n\r\n"
    b"0\r\n\r\n" + SMUGGLED,
    "te_identity_with_cl": b"POST /e HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n"
    b"Content-Length: 44\r\n\r\n" + SMUGGLED,
    "cl_hex": b"POST /e HTTP/1.1\r\nHost: a\r\nContent-Length: 0x2c\r\n\r\n" + SMUGGLED,
    "cl_negative": b"POST /e HTTP/1.1\r\nHost: a\r\nContent-Length: -44\r\n\r\n" + SMUGGLED,
    "cl_two_numbers": b"POST /e HTTP/1.1\r\nHost: a\r\nContent-Length: 4 4\r\n\r\n" + SMUGGLED,
    "cl_empty": b"POST /e HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n" + SMUGGLED,
    "cl_overflow": b"POST /e HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n",
    "cl_space_before_colon": b"POST /e HTTP/1.1\r\nHost: a\r\nContent-Length : 44\r\n\r\n" + SMUGGLED,
    "tab_in_field_name": b"GET /e HTTP/1.1\r\nHost: a\r\nX-For\twarded-For: 6.6.6.6\r\n\r\n",
    "tab_before_colon": b"GET /e HTTP/1.1\r\nHost: a\r\nX-Forwarded-For\t: 6.6.6.6\r\n\r\n",
    "empty_field_name": b"GET /e HTTP/1.1\r\nHost: a\r\n: x\r\n\r\n",
    "whitespace_before_first_field": b"GET /e HTTP/1.1\r\n Host: a\r\n\r\n",
    "host_twice_in_other_case": b"GET /e HTTP/1.1\r\nHost: a\r\nhOST: b\r\n\r\n",
    "chunk_size_trailing_space": b"POST /e HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5 \r\nhello\r\n0\r\n\r\n",
    "chunk_extension_quoted_crlf": b"POST /e HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
    b'\r\n5;a="x\r\n"\r\nhello\r\n0\r\n\r\n',
    "chunk_extension_bare_lf": b"POST /e HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5;a\nhello\r\n0\r\n\r\n" + SMUGGLED,
    "chunk_data_without_crlf": b"POST /e HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5\r\nhelloXX0\r\n\r\n" + SMUGGLED,
    "request_after_last_chunk_as_trailer": b"POST /e HTTP/1.1\r\nHost: a\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n0\r\nX: y\r\n" + SMUGGLED,
    "authority_form_target": b"GET a:80 HTTP/1.1\r\nHost: a\r\n\r\n",
    "asterisk_target": b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
    "absolute_form_with_userinfo": b"GET http://u@canary/x HTTP/1.1\r\nHost: a\r\n\r\n",
    "absolute_form_other_scheme": b"GET ftp://a/x HTTP/1.1\r\nHost: a\r\n\r\n",
    "lower_case_version": b"GET /e http/1.1\r\nHost: a\r\n\r\n",
    "two_spaces_in_request_line": b"GET  /e HTTP/1.1\r\nHost: a\r\n\r\n",
    "tab_in_request_line": b"GET\t/e HTTP/1.1\r\nHost: a\r\n\r\n",
}


@pytest.mark.parametrize("payload", REJECTED.values(), ids=REJECTED.keys())
def test_more_ambiguous_framing_is_rejected_400_closed_and_upstream_sees_nothing(
    edge_gateway: GatewayProcess, recorder: RawRecorder, canary: Canary, payload: bytes
) -> None:
    data, closed = exchange(edge_gateway.port, payload)
    assert statuses(data) == [400], data
    assert closed
    assert recorder.requests == []


def test_chunk_extensions_and_leading_zeros_are_dropped_and_the_body_forwarded_with_a_length(
    edge_gateway: GatewayProcess, recorder: RawRecorder
) -> None:
    payload = (
        b"POST /ext HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n" + CLOSE + b"\r\n"
        b"00005;name=value;other\r\nhello\r\n0;last=1\r\n\r\n"
    )
    data, _ = exchange(edge_gateway.port, payload)
    assert statuses(data) == [200]
    [seen] = recorder.requests
    assert seen.body == b"hello"
    assert seen.header(b"content-length") == b"5"
    assert seen.header(b"transfer-encoding") is None  # so no chunk (nor extension) upstream


def test_body_of_an_expect_100_request_answered_early_is_read_as_body_never_as_a_request(
    edge_gateway: GatewayProcess, recorder: RawRecorder, canary: Canary
) -> None:
    # TRACE is answered 405 before its body is read, and the connection stays open; a client
    # that sends the announced body anyway must not get it parsed as the next request.
    with connect(edge_gateway.port) as sock:
        sock.sendall(
            b"TRACE /t HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n"
            b"Content-Length: %d\r\n\r\n" % len(SMUGGLED)
        )
        time.sleep(0.3)
        sock.sendall(SMUGGLED + b"GET /after HTTP/1.1\r\nHost: a\r\n" + CLOSE + b"\r\n")
        data, closed = read_until_closed(sock)
    assert statuses(data) == [405, 200], data
    assert closed
    assert [r.target for r in recorder.requests] == [b"/after"]


def test_http10_post_without_length_has_an_empty_body_and_what_follows_is_never_served(
    edge_gateway: GatewayProcess, recorder: RawRecorder, canary: Canary
) -> None:
    data, closed = exchange(edge_gateway.port, b"POST /one HTTP/1.0\r\n\r\nGET /canary/x HTTP/1.0\r\n\r\n")
    assert statuses(data) == [200]
    assert closed
    assert [(r.method, r.target, r.body) for r in recorder.requests] == [(b"POST", b"/one", b"")]


# -- the Connection header against the gateway's own fields (the defence held) --------------


def test_connection_header_cannot_strip_the_gateways_own_forwarding_fields(
    edge_gateway: GatewayProcess, recorder: RawRecorder
) -> None:
    payload = (
        b"GET /conn HTTP/1.1\r\nHost: edge.test\r\nX-Request-ID: client-id-1\r\n"
        b"Connection: close, X-Forwarded-For, x-forwarded-proto, X-Forwarded-Host, Via, "
        b"X-Request-ID, Host\r\n\r\n"
    )
    data, _ = exchange(edge_gateway.port, payload)
    assert statuses(data) == [200]
    [seen] = recorder.requests
    assert seen.header(b"x-forwarded-for") == b"127.0.0.1"
    assert seen.header(b"x-forwarded-proto") == b"http"
    assert seen.header(b"x-forwarded-host") == b"edge.test"
    assert seen.header(b"via") == b"1.1 gateway"
    assert seen.header(b"x-request-id") == b"client-id-1"
    assert seen.header(b"host") == f"127.0.0.1:{recorder.port}".encode()
    assert seen.header(b"connection") is None


# -- secrets in logs ------------------------------------------------------------------------


def test_failed_background_refresh_logs_the_cache_key_without_its_query_string() -> None:
    # Query strings often carry tokens; the access log leaves them out, and so must the cache's
    # own lines (here the debug line of a stale-while-revalidate refresh whose upstream is gone).
    from tests.support.upstream import UpstreamServer

    server = UpstreamServer()
    upstream = server.start()
    gateway = GatewayProcess(
        {
            "GATEWAY_UPSTREAM_URL": upstream.url,
            "GATEWAY_CACHE_ENABLED": "true",
            "GATEWAY_LOG_LEVEL": "debug",
            "GATEWAY_UPSTREAM_TIMEOUT": "2",
        }
    )
    try:
        gateway.start()
        url = (
            f"{gateway.url}/cache/refresh-log?cc=max-age%3D1%2C%20stale-while-revalidate%3D30"
            "&api_key=SECRET-QUERY-TOKEN"
        )
        assert httpx.get(url).headers["x-cache"] == "MISS"
        server.stop()
        time.sleep(1.5)  # the entry is stale now, inside its stale-while-revalidate window
        assert httpx.get(url).headers["x-cache"] == "STALE"
        deadline = time.monotonic() + 10
        while "background refresh of" not in gateway.logs() and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        gateway.stop()
        server.stop()
    logs = gateway.logs()
    assert "background refresh of /cache/refresh-log?..." in logs
    assert "SECRET-QUERY-TOKEN" not in logs
