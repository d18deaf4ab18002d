"""Request smuggling and framing: every ambiguous or malformed message gets 400 and a closed
connection, and nothing reaches an upstream (the recorder sees no request, the canary no byte).

The gateway has one HTTP parser (httptools/llhttp) behind the front end's head check; the
former h11 option is gone (GATEWAY_HTTP_PARSER=h11 is refused at start-up), so there is no
second parser to parametrize over.
"""

from __future__ import annotations

import pytest

from tests.security.raw import exchange, statuses
from tests.security.upstreams import Canary, RawRecorder
from tests.support.gateway_process import GatewayProcess

SMUGGLED = b"GET /canary/smuggled HTTP/1.1\r\nHost: a\r\n\r\n"

REJECTED: dict[str, bytes] = {
    "cl_te": b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 48\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "te_cl": b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
    b"Content-Length: 3\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "duplicate_cl_same": b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
    "duplicate_cl_different": b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n"
    b"Content-Length: 44\r\n\r\n" + SMUGGLED,
    "cl_list": b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 1\r\n\r\nx",
    "cl_signed": b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\nx",
    "te_gzip": b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\nx",
    "te_gzip_then_chunked": b"POST /echo HTTP/1.1\r\nHost: a\r\n"
    b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    "te_duplicate": b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "te_space_before_colon": b"POST /echo HTTP/1.1\r\nHost: a\r\n"
    b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
    "te_in_http10": b"POST /echo HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "chunk_size_overflow": b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"FFFFFFFFFFFFFFFFF1\r\nx\r\n0\r\n\r\n" + SMUGGLED,
    "chunk_size_not_hex": b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"0x5\r\nhello\r\n0\r\n\r\n",
    "chunk_size_negative": b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
    b"\r\n-1\r\nx\r\n0\r\n\r\n",
    "chunk_data_longer_than_size": b"POST /echo HTTP/1.1\r\nHost: a\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n1\r\nxyz\r\n0\r\n\r\n",
    "chunk_bare_lf": b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\nx\r\n0\r\n\r\n",
    "obs_fold": b"GET /echo HTTP/1.1\r\nHost: a\r\nX-Folded: a\r\n b\r\n\r\n",
    "bare_lf_everywhere": b"GET /echo HTTP/1.1\nHost: a\n\n",
    "bare_lf_in_header": b"GET /echo HTTP/1.1\r\nHost: a\nX-Y: b\r\n\r\n",
    "bare_cr_in_header": b"GET /echo HTTP/1.1\r\nHost: a\rX-Y: b\r\n\r\n",
    "nul_in_header_value": b"GET /echo HTTP/1.1\r\nHost: a\r\nX-Y: a\x00b\r\n\r\n",
    "control_byte_in_header_value": b"GET /echo HTTP/1.1\r\nHost: a\r\nX-Y: a\x01b\r\n\r\n",
    "space_in_header_name": b"GET /echo HTTP/1.1\r\nHost: a\r\nX Y: b\r\n\r\n",
    "two_host_fields": b"GET /echo HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "no_host_in_http11": b"GET /echo HTTP/1.1\r\nX-Y: b\r\n\r\n",
    "space_in_target": b"GET /echo x HTTP/1.1\r\nHost: a\r\n\r\n",
    "http09_request_line": b"GET /echo\r\n\r\n",
    "method_not_a_token": b"G(T /echo HTTP/1.1\r\nHost: a\r\n\r\n",
}


@pytest.mark.parametrize("payload", REJECTED.values(), ids=REJECTED.keys())
def test_malformed_or_ambiguous_framing_is_rejected_400_closed_and_upstream_sees_nothing(
    edge_gateway: GatewayProcess, recorder: RawRecorder, canary: Canary, payload: bytes
) -> None:
    data, closed = exchange(edge_gateway.port, payload)
    assert statuses(data) == [400], data
    assert closed
    assert recorder.requests == []


def test_unsupported_http_version_is_answered_505_and_closed(
    edge_gateway: GatewayProcess, recorder: RawRecorder
) -> None:
    data, closed = exchange(edge_gateway.port, b"GET /echo HTTP/2.0\r\nHost: a\r\n\r\n")
    assert statuses(data) == [505]
    assert closed
    assert recorder.requests == []


def test_trailer_authorization_never_becomes_a_request_header(
    edge_gateway: GatewayProcess, recorder: RawRecorder
) -> None:
    payload = (
        b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
        b"Connection: close\r\n\r\n5\r\nhello\r\n0\r\n"
        b"Authorization: Bearer stolen\r\nX-Trailer: t\r\n\r\n"
    )
    data, _ = exchange(edge_gateway.port, payload)
    assert statuses(data) == [200]
    [seen] = recorder.requests
    assert seen.body == b"hello"
    assert seen.header(b"authorization") is None
    assert seen.header(b"x-trailer") is None
    assert b"stolen" not in bytes(recorder.connections[-1].raw)


def test_pipelined_requests_on_one_write_are_each_answered_in_order(
    edge_gateway: GatewayProcess, recorder: RawRecorder
) -> None:
    payload = (
        b"POST /one HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"
        b"GET /two HTTP/1.1\r\nHost: a\r\n\r\n"
        b"GET /three HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    )
    data, closed = exchange(edge_gateway.port, payload)
    assert statuses(data) == [200, 200, 200]
    assert closed
    assert [r.target for r in recorder.requests] == [b"/one", b"/two", b"/three"]
    assert recorder.requests[0].body == b"hello"
    assert data.index(b"answer for /one") < data.index(b"answer for /two")


def test_head_split_across_many_writes_is_reassembled(
    edge_gateway: GatewayProcess, recorder: RawRecorder
) -> None:
    import socket
    import time

    from tests.security.raw import read_until_closed

    payload = b"GET /split HTTP/1.1\r\nHost: a\r\nX-A: 1\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", edge_gateway.port), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(0, len(payload), 3):
            sock.sendall(payload[i : i + 3])
            time.sleep(0.005)
        data, _ = read_until_closed(sock)
    assert statuses(data) == [200]
    assert [r.target for r in recorder.requests] == [b"/split"]


@pytest.mark.parametrize("method", [b"FOOBAR", b"X-CUSTOM-VERB", b"PROPFIND", b"QUERY"])
def test_extension_methods_are_forwarded_with_their_own_token(
    edge_gateway: GatewayProcess, recorder: RawRecorder, method: bytes
) -> None:
    payload = method + b" /ext HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi"
    data, _ = exchange(edge_gateway.port, payload)
    assert statuses(data) == [200]
    [seen] = recorder.requests
    assert seen.method == method
    assert seen.body == b"hi"
