"""Reading raw header lists: the one set of lookup helpers every layer uses.

Pure: no I/O. Headers are ASGI-style ``(name, value)`` byte pairs with lowercase names: ASGI
servers give them so, and every list the gateway builds (upstream answers, stored entries) is
lowered once where it enters. Lookups compare exactly: they run several times per request, and
lowering every name on every lookup measured as a visible share of a cache hit's CPU.
"""

from __future__ import annotations

from collections.abc import Iterable

from gateway.types import Headers


def header(headers: Headers, name: bytes) -> bytes | None:
    """The first value of header ``name`` (lowercase), or None."""
    for key, value in headers:
        if key == name:
            return value
    return None


def header_values(headers: Headers, name: bytes) -> list[bytes]:
    """Every value of header ``name`` (lowercase), in order."""
    return [value for key, value in headers if key == name]


def combined(headers: Headers, name: bytes) -> bytes | None:
    """All field lines of ``name`` combined as one comma-separated value (RFC 9110 §5.3)."""
    values = header_values(headers, name)
    if not values:
        return None
    return b", ".join(value.strip() for value in values)


def list_members(value: bytes | None) -> list[str]:
    """The lowercase members of a comma-separated list field such as Vary or Connection."""
    if not value:
        return []
    text = value.decode("latin-1")
    return [member.strip().lower() for member in text.split(",") if member.strip()]


def without(headers: Iterable[tuple[bytes, bytes]], names: frozenset[bytes]) -> list[tuple[bytes, bytes]]:
    """The headers whose lowercase name is not in ``names``."""
    return [(key, value) for key, value in headers if key.lower() not in names]
