"""Send exact bytes over a socket: for what HTTP clients normalise away."""

from __future__ import annotations

import socket


def raw_request(
    port: int, request: bytes, timeout: float = 10
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """Send one request (with `Connection: close`) and parse the whole response."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    headers = [(k.strip().lower(), v.strip()) for k, _, v in (ln.partition(b":") for ln in lines[1:])]
    if (b"transfer-encoding", b"chunked") in headers:
        body = _dechunk(body)
    return status, headers, body


def _dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += data[:size]
        data = data[size + 2 :]
    return out
