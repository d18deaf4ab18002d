"""The Host field (RFC 9112 §3.2, RFC 9110 §7.2): validated and lowercased. Pure."""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache

#: reg-name or IPv4 of unreserved characters (stricter than RFC 3986's reg-name, which also
#: allows sub-delims and percent-escapes: no client needs them in a Host, and this value goes
#: into the cache key and `X-Forwarded-Host`, where an upstream may echo it into HTML), then an
#: optional port of digits.
_HOST = re.compile(rb"([A-Za-z0-9\-._~]+|\[[0-9A-Fa-f:.]+\])(?::([0-9]{0,5}))?")


@lru_cache(maxsize=1024)  # a server answers few host names; the check is then a dict lookup
def normalise_host(value: bytes) -> str | None:
    """`host[:port]` lowercased, without a trailing dot on the name; None if it is invalid."""
    match = _HOST.fullmatch(value)
    if match is None:
        return None
    name, port = match.group(1), match.group(2)
    if name.startswith(b"["):
        try:
            ipaddress.IPv6Address(name[1:-1].decode("ascii"))
        except ValueError:
            return None
    elif name.endswith(b".") and len(name) > 1:
        name = name[:-1]  # "example.com." is "example.com" (as NGINX does)
    if port is not None and port and int(port) > 65535:
        return None
    host = name.lower().decode("ascii")
    return f"{host}:{port.decode('ascii')}" if port else host
