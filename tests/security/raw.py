"""Raw-socket helpers: send exact bytes, read what comes back until the gateway closes."""

from __future__ import annotations

import re
import socket
import time


def connect(port: int, timeout: float = 10) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def read_until_closed(sock: socket.socket, timeout: float = 10) -> tuple[bytes, bool]:
    """Everything the peer sends until it closes; (data, closed). `closed` is False when the
    connection was still open after `timeout` seconds."""
    sock.settimeout(0.2)
    data = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return data, True
        if not chunk:
            return data, True
        data += chunk
    return data, False


def exchange(port: int, payload: bytes, timeout: float = 10) -> tuple[bytes, bool]:
    """Send `payload` on a new connection; what came back and whether the gateway closed."""
    with connect(port, timeout) as sock:
        sock.sendall(payload)
        return read_until_closed(sock, timeout)


def statuses(data: bytes) -> list[int]:
    """Status codes of the responses in `data`, in order (bodies are short text here)."""
    return [int(code) for code in re.findall(rb"HTTP/1\.1 (\d{3}) ", data)]


def read_response(sock: socket.socket, timeout: float = 10) -> bytes:
    """One response with a Content-Length body (enough for the gateway's answers here)."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body
