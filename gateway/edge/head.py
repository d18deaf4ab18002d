"""Pure rules for an HTTP/1.x request head, checked before the parser sees it.

llhttp (httptools) already rejects the classic smuggling shapes (Content-Length with
Transfer-Encoding, duplicate Content-Length, bare CR/LF, obs-fold, control bytes, chunk-size
overflow). What it lacks is here: size and count limits, a complete-head requirement (so memory
is bounded while a head arrives), the framing rules it leaves lenient, and any method token
(llhttp knows only a fixed list). No I/O, no framework.
"""

from __future__ import annotations

import re
from typing import NamedTuple

#: The methods llhttp parses itself (llhttp 9, as shipped in httptools 0.9).
LLHTTP_METHODS = frozenset(
    {
        b"DELETE",
        b"GET",
        b"HEAD",
        b"POST",
        b"PUT",
        b"CONNECT",
        b"OPTIONS",
        b"TRACE",
        b"COPY",
        b"LOCK",
        b"MKCOL",
        b"MOVE",
        b"PROPFIND",
        b"PROPPATCH",
        b"SEARCH",
        b"UNLOCK",
        b"BIND",
        b"REBIND",
        b"UNBIND",
        b"ACL",
        b"REPORT",
        b"MKACTIVITY",
        b"CHECKOUT",
        b"MERGE",
        b"M-SEARCH",
        b"NOTIFY",
        b"SUBSCRIBE",
        b"UNSUBSCRIBE",
        b"PATCH",
        b"PURGE",
        b"MKCALENDAR",
        b"LINK",
        b"UNLINK",
        b"SOURCE",
        b"QUERY",
    }
)
#: What an extension method is shown to llhttp as; the real token goes into the ASGI scope.
STAND_IN = b"GET"
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,64}")
_VERSIONS = frozenset({b"HTTP/1.1", b"HTTP/1.0"})
_VERSION_SHAPE = re.compile(rb"HTTP/[0-9]\.[0-9]")
END = b"\r\n\r\n"


class Limits(NamedTuple):
    max_header_bytes: int
    max_headers: int
    max_url_bytes: int


class Rejection(NamedTuple):
    status: int
    reason: str


class Head(NamedTuple):
    """A head that passed: the bytes to give the parser and the method when it was swapped."""

    data: bytes
    method: bytes | None  # the real method when llhttp is shown STAND_IN


def incomplete(buffered: bytes | bytearray, limits: Limits) -> Rejection | None:
    """For a head still arriving: reject as soon as it cannot fit the limits anymore, or
    when a bare LF shows it is never going to end in CRLF CRLF."""
    if buffered.count(b"\n") != buffered.count(b"\r\n"):
        return Rejection(400, "Bare LF in the request head.")
    if len(buffered) <= limits.max_header_bytes:
        line_end = buffered.find(b"\r\n")
        if line_end < 0 and len(buffered) > limits.max_url_bytes + 80:
            return Rejection(414, "The request target is too long.")
        return None
    if buffered.find(b"\r\n") < 0:
        return Rejection(414, "The request target is too long.")
    return Rejection(431, "The request header section is too large.")


def check(head: bytes, limits: Limits) -> Head | Rejection:
    """A complete head (request line through the blank line, no leading CRLF)."""
    line_end = head.find(b"\r\n")
    line = head[:line_end]
    parts = line.split(b" ")
    if len(parts) != 3:
        if len(line) > limits.max_url_bytes:
            return Rejection(414, "The request target is too long.")
        return Rejection(400, "Malformed request line.")
    method, target, version = parts
    if len(target) > limits.max_url_bytes:
        return Rejection(414, "The request target is too long.")
    if len(head) > limits.max_header_bytes:
        return Rejection(431, "The request header section is too large.")
    # Lines after the request line, minus the final empty one.
    if head.count(b"\r\n") - 2 > limits.max_headers:
        return Rejection(431, "Too many header fields.")
    if version not in _VERSIONS:
        if _VERSION_SHAPE.fullmatch(version):
            return Rejection(505, "Only HTTP/1.0 and HTTP/1.1 are supported here.")
        return Rejection(400, "Malformed request line.")
    if method in LLHTTP_METHODS:
        return Head(head, None)
    if not _TOKEN.fullmatch(method):
        return Rejection(400, "Malformed request method.")
    if method.upper() != method:
        # Methods are case-sensitive (RFC 9110 §9.1), but the upstream client sends every
        # method upper-cased: `trace` would pass every rule here as an unknown method and
        # reach the upstream as TRACE (`post` would cost what an unknown method costs, `get`
        # would forward its body). NGINX refuses lower-case methods as well.
        return Rejection(400, "Request methods must be upper-case.")
    return Head(STAND_IN + head[len(method) :], method)


class Framing:
    """Header facts the head check cannot see cheaply, collected from the parser's callbacks."""

    __slots__ = ("content_length", "hosts", "transfer_encoding")

    def __init__(self) -> None:
        self.hosts = 0
        self.content_length: bytes | None = None
        self.transfer_encoding: bytes | None = None

    def reset(self) -> None:
        """For the next request on the connection (cheaper than a new object per request)."""
        self.hosts = 0
        self.content_length = None
        self.transfer_encoding = None

    def add(self, name: bytes, value: bytes) -> None:
        """`name` is lowercase. Duplicates of CL/TE are refused by llhttp itself."""
        if name == b"host":
            self.hosts += 1
        elif name == b"content-length":
            self.content_length = value
        elif name == b"transfer-encoding":
            self.transfer_encoding = value

    def error(self, http_version: str) -> Rejection | None:
        """RFC 9112 §3.2 (one Host), §6.1 (only `chunked`, never in HTTP/1.0)."""
        if self.hosts != 1 and (self.hosts > 1 or http_version == "1.1"):
            return Rejection(400, "A request needs exactly one Host header field.")
        te = self.transfer_encoding
        if te is not None:
            if http_version != "1.1":
                return Rejection(400, "Transfer-Encoding is not allowed in HTTP/1.0.")
            if te.strip().lower() != b"chunked":
                return Rejection(400, "Only Transfer-Encoding: chunked is accepted.")
        return None

    def body_length(self) -> int | None:
        """Bytes of body after the head: a length, or None for chunked (the parser finds the
        end). Only called once the parser accepted the head, so the values are valid."""
        if self.transfer_encoding is not None:
            return None
        return int(self.content_length) if self.content_length is not None else 0
